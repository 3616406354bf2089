"""Configuration of the scheduler service: each field a setting (flag `--x-y`, variable
LLMSERVE_X_Y), but `policy_options`, which code sets."""

from __future__ import annotations

from dataclasses import dataclass

from llmserve.runtime.service_settings import ServiceSettings
from llmserve.settings import redefault, setting
from scheduler_svc.core.policy import COST_MODEL_POLICIES, POLICY_NAMES


@dataclass(frozen=True, kw_only=True)
class SchedulerServiceConfig(ServiceSettings):
    """How the scheduler service runs. Per-worker geometry (blocks, budgets, context length) comes
    from each worker's Describe, not from here."""

    address: str = redefault(ServiceSettings, "address", "127.0.0.1:50052")
    drain_grace_s: float = redefault(ServiceSettings, "drain_grace_s", 10.0)
    worker_addrs: tuple[str, ...] = setting((), help="the workers' host:port, comma-separated")
    kvstore_addr: str = setting("", help="the KV store's host:port, for its capacity stream (empty: none)")
    policy: str = setting("fcfs", choices=POLICY_NAMES, help="scheduling policy")
    cost_model: str = setting("", help="bros, tempo: JSON file of step-time coefficients, the prior of the cost "
                                       "model they refit online from step timings (empty: the model each worker "
                                       "fitted on itself at start, else built-in defaults)")
    # Plans in flight per worker: 2 lets the scheduler plan step N+1 while step N runs.
    max_inflight_plans: int = setting(2, help="plans in flight per worker")
    max_num_waiting: int = setting(4096, help="requests waiting per worker before Submit answers RESOURCE_EXHAUSTED")
    worker_connect_timeout_s: float = setting(300.0, help="how long to wait for a worker to become healthy at "
                                                          "start, seconds")
    worker_retry_interval_s: float = setting(1.0, help="pause between reconnect attempts to a lost worker, seconds")
    # Bidirectional KV: victims the policy preempts by CHECKPOINT (bros: best-effort and deadline)
    # go to the KV store's host tier and resume without recompute.
    checkpoint_preemption: bool = setting(True, help="preempt by checkpoint to the KV store's host tier "
                                                     "(--no-checkpoint-preemption: recompute only)")
    # Issue 9's target 5, opt-in: a router in front can send a rejected request elsewhere.
    rt_admission_control: bool = setting(False, help="bros, tempo: reject (RESOURCE_EXHAUSTED, with the predicted TTFT in "
                                                     "the message) a new real-time request whose TTFT the policy's cost "
                                                     "model predicts past its SLO, instead of queueing it")
    # Issue 13: each worker keeps the full prompt blocks it computed, shared by reference count;
    # admission claims the hit from a mirror of that cache (scheduler_svc/core/prefix_mirror.py).
    prefix_cache: bool = setting(True, help="prefix caching: reuse the KV of a prompt's cached full blocks "
                                            "(--no-prefix-cache: compute every prompt in full)")
    prefix_shared_tenants: tuple[str, ...] = setting((), help="tenants that share cached KV with each other, "
                                                              "comma-separated (others never share: each tenant's "
                                                              "blocks are salted by its name)")
    # Issue 9, opt-in: streams bank slack between bursts of prompts (policy/slo_step.py); off by
    # default until its live cost on best-effort work is understood (docs/scheduling.md).
    slack_bank_tpots: float = setting(0.0, help="bros, tempo: while a stream has less than this many TPOTs of slack, "
                                                "work other than on-time RT fills a step only to half its TPOT, so "
                                                "streams bank slack for the next burst of prompts (0: off)")
    # Keyword options of the policy factory, for code (e.g. a benchmark's aging_s); not a flag.
    policy_options: tuple[tuple[str, object], ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.worker_addrs:
            raise ValueError("at least one worker address is needed (--worker-addrs host:port[,host:port...])")
        if self.cost_model and self.policy not in COST_MODEL_POLICIES:
            raise ValueError(f"--cost-model is used by --policy {' or '.join(COST_MODEL_POLICIES)} only "
                             f"(got --policy {self.policy})")
        if self.rt_admission_control and self.policy not in COST_MODEL_POLICIES:
            raise ValueError(f"--rt-admission-control needs --policy {' or '.join(COST_MODEL_POLICIES)}, whose cost "
                             f"model predicts the TTFT (got --policy {self.policy})")
        if self.slack_bank_tpots < 0:
            raise ValueError(f"--slack-bank-tpots must be >= 0, got {self.slack_bank_tpots}")
        if self.slack_bank_tpots and self.policy not in COST_MODEL_POLICIES:
            raise ValueError(f"--slack-bank-tpots is used by --policy {' or '.join(COST_MODEL_POLICIES)} only "
                             f"(got --policy {self.policy})")
        if self.max_inflight_plans < 1:
            raise ValueError("--max-inflight-plans must be >= 1")
        if self.max_num_waiting < 1:
            raise ValueError("--max-num-waiting must be >= 1")
