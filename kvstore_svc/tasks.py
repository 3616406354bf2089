"""Background loops of the KV store service: lease expiry and metrics publishing."""

from __future__ import annotations

import asyncio
import logging

from llmserve.runtime.metrics import ServiceMetrics

from kvstore_svc.changes import ChangeSignal
from kvstore_svc.core import KvStore

logger = logging.getLogger(__name__)


async def expire_forever(store: KvStore, changes: ChangeSignal, period_s: float) -> None:
    """Every `period_s`, drops the leases of silent workers and wakes the capacity watchers."""
    while True:
        await asyncio.sleep(period_s)
        before = store.leases.num_expired_leases
        expired = store.expire()
        if expired:
            changes.notify()
            logger.warning(
                "workers %s missed heartbeats for %.1f s: %d leases expired",
                ", ".join(expired), store.lease_ttl_s, store.leases.num_expired_leases - before,
            )


async def publish_metrics_forever(store: KvStore, metrics: ServiceMetrics, period_s: float) -> None:
    """Copies pool usage into the gauges on the event loop (the core is never read from the
    metrics server's thread)."""
    expired_seen: dict[str, int] = {}
    moved_seen = {"save": 0, "restore": 0}
    while True:
        totals = store.metrics()
        for direction, total in (("save", totals.checkpoint_bytes_total), ("restore", totals.restored_bytes_total)):
            if total > moved_seen[direction]:
                metrics.checkpoint_bytes_total.labels(direction).inc(total - moved_seen[direction])
                moved_seen[direction] = total
        for stats in store.all_pool_stats():
            # Deadline leases come from the high end with best-effort ones: the pool counts them together.
            metrics.set_kv_blocks(stats.worker_id, {"real_time": stats.num_real_time, "best_effort": stats.num_best_effort}, stats.num_blocks)
            new_expired = stats.num_expired_leases - expired_seen.get(stats.worker_id, 0)
            if new_expired > 0:
                metrics.expired_leases_total.labels(stats.worker_id).inc(new_expired)
            expired_seen[stats.worker_id] = stats.num_expired_leases
        await asyncio.sleep(period_s)
