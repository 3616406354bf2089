"""The scheduler's capacity watcher: a pool that stops being live is reported lost, a new store
incarnation is reported as a restart (the checkpoint book then forgets the lost host tier), and the
old incarnation's pools are not compared with the new one's."""

from __future__ import annotations

from llmserve.v1 import kvstore_pb2
from scheduler_svc.capacity_watch import CapacityWatcher
from scheduler_svc.core.checkpoints import CheckpointBook


def _stats(worker: str, live: bool = True, incarnation: str = "one", expired: int = 0) -> kvstore_pb2.PoolStats:
    return kvstore_pb2.PoolStats(worker_id=worker, num_blocks=8, num_free=8, live=live, store_incarnation=incarnation,
                                 num_expired_leases=expired)


def _watcher() -> tuple[CapacityWatcher, list[str], list[str]]:
    lost: list[str] = []
    restarts: list[str] = []
    watcher = CapacityWatcher("kv:1", None, lost.append, on_store_restarted=lambda: restarts.append("restart"))
    return watcher, lost, restarts


def test_a_pool_that_stops_being_live_is_lost() -> None:
    watcher, lost, restarts = _watcher()
    watcher.observe(_stats("w0"))
    watcher.observe(_stats("w0", live=False, expired=3))
    assert lost == ["w0"] and restarts == []


def test_a_new_incarnation_is_a_restart_and_the_old_pools_are_forgotten() -> None:
    watcher, lost, restarts = _watcher()
    watcher.observe(_stats("w0"))
    watcher.observe(_stats("w1"))
    # The new store: w1 re-declared its pool, w0 not yet; no pool is "lost" by the switch.
    watcher.observe(_stats("w1", incarnation="two"))
    assert restarts == ["restart"] and watcher.num_store_restarts == 1 and watcher.incarnation == "two"
    assert set(watcher.pools) == {"w1"} and lost == []
    watcher.observe(_stats("w0", incarnation="two"))
    assert restarts == ["restart"]


def test_the_checkpoint_book_forgets_a_lost_host_tier() -> None:
    book = CheckpointBook()
    book.on_checkpoint("a", 32)
    book.on_checkpoint("b", 16)
    assert book.on_tier_lost() == 2
    assert len(book) == 0 and book.resume_point("a", 40) == 0 and book.stats.num_lost_checkpoints == 2
    assert not book.forget("a")  # nothing left for the worker to drop


def test_the_host_tier_capacity_is_passed_on_when_first_seen_or_changed() -> None:
    sized: list[int] = []
    watcher = CapacityWatcher("kv:1", None, lambda w: None, on_host_tier_sized=sized.append)
    watcher.observe(_stats("w0"))  # an older store: no capacity reported
    for capacity in (4096, 4096, 8192):
        stats = _stats("w0")
        stats.host_tier_capacity_bytes = capacity
        watcher.observe(stats)
    assert sized == [4096, 8192] and watcher.host_tier_capacity_bytes == 8192


def test_the_scheduler_service_sizes_its_book_from_the_tier_and_a_worker() -> None:
    from llmserve.v1 import worker_pb2
    from scheduler_svc.config import SchedulerServiceConfig
    from scheduler_svc.server import SchedulerService

    service = SchedulerService(SchedulerServiceConfig(worker_addrs=("127.0.0.1:1",)))
    book = service.checkpoints
    assert book is not None and not book.fits(1)  # nothing known yet: no checkpoint "fits"
    service._host_tier_sized(10 * 4096)  # ten blocks of 4,096 bytes
    assert not book.fits(1)  # the blocks' size comes with a worker
    service.make_core(worker_pb2.WorkerInfo(max_model_len=256, block_size=16, num_blocks=64,
                                            bytes_per_block=4096, max_num_batched_tokens=64, max_num_seqs=8))
    assert book.fits(160) and not book.fits(161)
