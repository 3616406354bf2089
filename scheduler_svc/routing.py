"""Which healthy worker a request goes to (the service's routing, `SchedulerService`).

With prefix caching on, KV-aware placement (`scheduler_svc/core/placement.py`, as the simulator's
cluster runs it): each worker's cost is the prompt tokens its cache lacks (from the link's mirror
of that cache) plus its outstanding tokens, least cost wins, ties rotate. Without caching, the
least outstanding tokens, first on ties, as before. A workflow's next call is not pinned to its
previous worker here (the router's per-workflow memory would grow with every workflow id a
long-running service sees); its previous prompt cached on that worker already draws it there.
"""

from __future__ import annotations

from collections.abc import Sequence

from llmserve.runtime.errors import UnavailableError
from scheduler_svc.core.placement import PlacementConfig, Router, WorkerLoad
from scheduler_svc.core.request import Request
from scheduler_svc.worker_link import WorkerLink


class LinkPicker:
    """Chooses a healthy link per request (module docstring)."""

    def __init__(self, kv_aware: bool) -> None:
        self._router = Router(PlacementConfig()) if kv_aware else None

    def pick(self, links: Sequence[WorkerLink], request: Request | None = None) -> WorkerLink:
        healthy = [link for link in links if link.healthy]
        if not healthy:
            raise UnavailableError("no healthy worker: retry shortly")
        if self._router is None or request is None or len(healthy) == 1:
            return min(healthy, key=lambda link: link.load())
        loads = [WorkerLoad(link.cached_tokens(request), link.load(), 0) for link in healthy]
        return healthy[self._router.choose(request.num_prompt_tokens, loads)]
