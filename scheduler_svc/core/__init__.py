"""The pure scheduler core: request types, the per-worker `Scheduler`, its block ledger and the
scheduling policies. Synchronous, stdlib only (no grpc, asyncio or protobuf); a clock is injected.
"""

from __future__ import annotations

from scheduler_svc.core.block_ledger import BlockLedger
from scheduler_svc.core.clock import Clock, ManualClock, WallClock
from scheduler_svc.core.config import SchedulerConfig
from scheduler_svc.core.cost_model import CostModel, LinearCostModel
from scheduler_svc.core.plan import (
    BatchPlan,
    NewRequestData,
    RequestOutput,
    ScheduledRequest,
    StepResult,
    StepTiming,
)
from scheduler_svc.core.policy import POLICY_NAMES, Policy, PreemptionMode, make_policy
from scheduler_svc.core.request import (
    FinishReason,
    Request,
    RequestStatus,
    SamplingParams,
    ServiceClass,
    Slo,
    WorkflowRef,
)
from scheduler_svc.core.scheduler import Scheduler, SchedulerStats
from scheduler_svc.core.step_draft import StepDraft

__all__ = [
    "POLICY_NAMES", "BatchPlan", "BlockLedger", "Clock", "CostModel", "FinishReason", "LinearCostModel",
    "ManualClock", "NewRequestData", "Policy", "PreemptionMode", "Request", "RequestOutput", "RequestStatus",
    "SamplingParams", "ScheduledRequest", "Scheduler", "SchedulerConfig", "SchedulerStats", "ServiceClass", "Slo",
    "StepDraft", "StepResult", "StepTiming", "WallClock", "WorkflowRef", "make_policy",
]
