"""The scheduler service's parked requests (evicted from a failed worker, not yet placed), driven
by the events that can place them, with stand-in worker links: a worker becoming ready, a step
freeing room on a full worker; a request no worker can serve ends with an error, and one whose
client left is dropped with its checkpoint book entry."""

from __future__ import annotations

from scheduler_svc.config import SchedulerServiceConfig
from scheduler_svc.core import FinishReason
from scheduler_svc.core.checkpoints import CheckpointBook
from scheduler_svc.core.plan import RequestOutput
from scheduler_svc.core.request import Request
from llmserve.errors import CapacityError, InvalidRequestError
from scheduler_svc.server import SchedulerService, _OpenRequest
from tests.factories import make_request


class StandInLink:
    """What the service asks of a WorkerLink when it places a request."""

    def __init__(self, address: str, healthy: bool = True, refuse: Exception | None = None) -> None:
        self.address = address
        self.healthy = healthy
        self.refuse = refuse
        self.submitted: list[str] = []

    def load(self) -> int:
        return len(self.submitted)

    def submit(self, request: Request) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.submitted.append(request.request_id)


def _service(*links: StandInLink) -> SchedulerService:
    service = SchedulerService(SchedulerServiceConfig(worker_addrs=tuple(link.address for link in links)))
    service.links = list(links)  # type: ignore[arg-type]
    return service


def _open(service: SchedulerService, request_id: str) -> Request:
    request = make_request(request_id)
    service._open[request_id] = _OpenRequest(request, None)
    return request


def test_requests_evicted_with_no_healthy_worker_wait_for_the_ready_event() -> None:
    link = StandInLink("w0", healthy=False)
    service = _service(link)
    evicted = [_open(service, "a"), _open(service, "b")]
    service._reroute(link, evicted)  # type: ignore[arg-type]
    assert [r.request_id for r in service._orphans] == ["a", "b"] and not link.submitted
    service._dispatch([])  # a step elsewhere changes nothing while no worker is healthy
    assert len(service._orphans) == 2
    link.healthy = True
    service._worker_ready(link)  # type: ignore[arg-type]
    assert link.submitted == ["a", "b"] and not service._orphans
    assert service._open["a"].link is link


def test_a_full_worker_takes_a_parked_request_after_a_step() -> None:
    link = StandInLink("w0", refuse=CapacityError("4096 requests are already waiting"))
    service = _service(link)
    service._reroute(StandInLink("dead"), [_open(service, "a")])  # type: ignore[arg-type]
    assert [r.request_id for r in service._orphans] == ["a"]
    link.refuse = None
    service._dispatch([RequestOutput("other", (5,))])
    assert link.submitted == ["a"] and not service._orphans


def test_a_request_no_worker_can_serve_ends_with_an_error_instead_of_waiting() -> None:
    link = StandInLink("w0", refuse=InvalidRequestError("prompt exceeds the context length 64"))
    service = _service(link)
    service._reroute(StandInLink("dead"), [_open(service, "a")])  # type: ignore[arg-type]
    assert not service._orphans
    output = service._open["a"].events.get_nowait()
    assert output.finish_reason is FinishReason.ERROR and "context length 64" in output.error_message


def test_a_parked_request_whose_client_left_is_dropped_with_its_book_entry() -> None:
    link = StandInLink("w0", healthy=False)
    service = _service(link)
    service.checkpoints = CheckpointBook()
    request = _open(service, "a")
    service.checkpoints.on_checkpoint("a", 8)
    assert len(service.checkpoints) == 1
    service._reroute(link, [request])  # type: ignore[arg-type]
    del service._open["a"]  # its Submit call ended
    link.healthy = True
    service._worker_ready(link)  # type: ignore[arg-type]
    assert not link.submitted and not service._orphans and len(service.checkpoints) == 0
