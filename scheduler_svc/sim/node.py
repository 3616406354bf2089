"""One simulated worker and the scheduler core that plans for it: the unit the single-worker
simulation (simulator.py) runs once and the cluster simulation (cluster.py) runs N times.

It builds the core as the service does (policy, checkpoint book, a mirror of the worker's prefix
cache as the core's `PrefixCacheView`, fed by the worker's step results), registers the worker's pool with the kvstore core's `LeaseTable`, keeps
the plans in flight, and executes them on a `SimWorker` (worker.py). Time is the caller's: a
node executes a plan at `now` and says how long the step takes; the caller advances the clock and
hands the result back (`complete`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping

from kvstore_svc.core.lease_table import LeaseTable
from llmserve.plan_book import PlanLimits, WorkerPrefixCache
from llmserve.plan_book.prefix_cache import CountingMover
from llmserve.prefix.host_tier import HostPrefixTier
from scheduler_svc.core import Scheduler
from scheduler_svc.core.checkpoints import CheckpointBook
from scheduler_svc.core.clock import ManualClock
from scheduler_svc.core.config import SchedulerConfig
from scheduler_svc.core.plan import BatchPlan, RequestOutput, StepResult
from scheduler_svc.core.prefix_mirror import PrefixMirror
from scheduler_svc.sim.cost_model import CostModel
from scheduler_svc.sim.host_tier import SimHostTier
from scheduler_svc.sim.policies import build_policy
from scheduler_svc.sim.prefix import PrefixStats
from scheduler_svc.sim.recompute import RecomputeCounter
from scheduler_svc.sim.worker import SimWorker

EOS_TOKEN_ID = 2


class SimNode:
    """A worker, its core, its plans in flight and its busy-time counters."""

    def __init__(self, worker_id: str, policy: str, cost: CostModel, config, clock: ManualClock,  # noqa: ANN001
                 true_lengths: Mapping[str, int], chains: Mapping[str, tuple[int, ...]] | None,
                 host_tier: SimHostTier | None = None) -> None:
        """`config`: the run's `SimConfig` (simulator.py); `chains`: the requests' prompt chains
        (from the traces' hash ids; None: no prefix cache); `host_tier`: as `Simulation`'s
        (checkpoints; the prefix cache's own host tier is `config.prefix_host_tier_bytes`)."""
        self.worker_id = worker_id
        self.num_blocks = config.num_blocks
        core_config = SchedulerConfig(num_blocks=config.num_blocks, block_size=config.block_size,
                                      max_num_batched_tokens=config.max_num_batched_tokens,
                                      max_num_seqs=config.max_num_seqs, max_model_len=config.max_model_len,
                                      eos_token_ids=(EOS_TOKEN_ID,), max_num_waiting=1 << 30,
                                      rt_admission_control=config.rt_admission_control)
        book = CheckpointBook() if config.checkpoint_preemption else None
        # The live worker's cache (and host tier), the live scheduler's mirror of it.
        self.prefix: PrefixMirror | None = None
        self.cache: WorkerPrefixCache | None = None
        self.prefix_stats: PrefixStats | None = None
        if chains is not None:
            self.prefix = PrefixMirror(config.block_size)
            tier = HostPrefixTier(config.prefix_host_tier_bytes // (config.block_size * config.kv_bytes_per_token))
            get_chain = chains.get
            self.cache = WorkerPrefixCache(config.block_size, tier, CountingMover(),
                                           chain_of=lambda new: get_chain(new.request_id, ()))
            self.prefix_stats = PrefixStats(config.block_size)
            self.cache.on_admit = self.prefix_stats.on_admit
        self.core = Scheduler(core_config, build_policy(policy, cost, config.policy_options, config.cost_model_as_prior,
                                                        true_lengths), clock, checkpoints=book, prefix=self.prefix)
        self.leases = LeaseTable(ttl_s=1e12)  # the virtual clock jumps; nothing expires in a simulation
        self.leases.register_pool(worker_id, config.num_blocks, config.block_size, 1, now=0.0)
        if host_tier is None and book is not None:
            host_tier = SimHostTier(config.block_size, config.kv_bytes_per_token, config.host_tier_bytes,
                                    config.link_bytes_per_s, config.checkpoint_lazy)
        self.host_tier = host_tier
        if book is not None and host_tier is not None:
            # As the service's book learns it from the store (capacity_watch.py): the tier's size.
            book.set_capacity(host_tier.capacity, host_tier.block_bytes, config.block_size)
        limits = PlanLimits(config.max_num_batched_tokens, config.max_num_seqs, config.max_model_len)
        copy_s_per_block = config.block_size * config.kv_bytes_per_token / config.link_bytes_per_s
        self.worker = SimWorker(worker_id, self.leases, config.block_size, cost, true_lengths, EOS_TOKEN_ID,
                                limits=limits, host_tier=host_tier, prefix=self.cache,
                                prefix_copy_s_per_block=copy_s_per_block)
        self.recompute = RecomputeCounter()
        self.inflight: deque[BatchPlan] = deque()
        self.num_steps = 0
        self.busy_s = 0.0
        self.kv_block_s = 0.0

    def plan_ahead(self, depth: int) -> None:
        """Plans until `depth` plans are in flight or the core has nothing to plan."""
        while len(self.inflight) < depth:
            plan = self.core.schedule()
            if plan.is_empty():
                return
            self.inflight.append(plan)

    def execute(self, plan: BatchPlan, now: float) -> tuple[StepResult, float]:
        """Runs `plan` on the worker at `now`; returns its result and the step's duration (s)."""
        result, dt = self.worker.execute(plan, now)
        self.recompute.observe(plan, result)
        if dt > 0:
            # Blocks held by requests (the worker's, not the store's record, which also counts the
            # blocks held ahead and lags by a sync).
            self.kv_block_s += self.worker.num_used_blocks * dt
            self.busy_s += dt
        self.num_steps += 1
        return result, dt

    def complete(self, plan: BatchPlan, result: StepResult) -> list[RequestOutput]:
        """Hands a step's result to the core, at the step's end (the caller's clock)."""
        return self.core.update(result)  # a failed one too (its error set): Scheduler.update

    def check_invariants(self) -> None:
        self.worker.check_invariants()
        if self.cache is not None:
            self.cache.check()

    def checkpoint_counters(self) -> dict[str, float] | None:
        if self.host_tier is None:
            return None
        tier = self.host_tier.stats
        return {"host_tier_checkpoints": tier.num_checkpoints, "host_tier_restores": tier.num_restores,
                "host_tier_refusals": tier.num_refusals, "host_tier_evictions": tier.num_evictions,
                "host_tier_failed_restores": tier.num_failed_restores,
                "host_tier_restored_bytes": tier.bytes_restored,
                "host_tier_transfer_s": round(tier.transfer_s, 6)}


def merged_counters(counters: Iterable[dict[str, float] | None]) -> dict[str, float] | None:
    """Key-wise sums of the nodes' counters; None when no node has any."""
    present = [c for c in counters if c is not None]
    if not present:
        return None
    out: dict[str, float] = {}
    for c in present:
        for key, value in c.items():
            out[key] = out.get(key, 0) + value
    return out
