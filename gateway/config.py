"""Configuration of the gateway service: each field a setting (flag `--x-y`, variable LLMSERVE_X_Y)."""

from __future__ import annotations

from dataclasses import dataclass

from llmserve.model_source import ModelSettings
from llmserve.runtime.service_settings import ServiceSettings
from llmserve.settings import redefault, setting


@dataclass(frozen=True, kw_only=True)
class GatewayConfig(ModelSettings, ServiceSettings):
    """How the gateway runs. Model limits (context, vocabulary) come from the scheduler's workers;
    `model` is the one whose tokenizer the gateway uses (the workers serve the same one)."""

    address: str = redefault(ServiceSettings, "address", "127.0.0.1:50051")
    drain_grace_s: float = redefault(ServiceSettings, "drain_grace_s", 10.0)
    scheduler_addr: str = setting("127.0.0.1:50052", help="the scheduler service's host:port")
    tokenizer: str | None = setting(None, help="tokenizer folder, for a model spec without one (dummy weights "
                                               "of another model's config)")
    max_concurrent_requests: int = setting(1024, help="running Generate calls beyond this get RESOURCE_EXHAUSTED")
    scheduler_timeout_s: float = setting(300.0, help="how long to wait at start for the scheduler to be healthy "
                                                     "and report its model, seconds")
    abort_timeout_s: float = setting(5.0, help="time a Cancel RPC gives Scheduler.Abort, seconds")
    scheduler_outage_s: float = setting(60.0, help="how long a request waits for a lost scheduler to come back "
                                                   "(it is then resubmitted with the tokens it has) before it "
                                                   "fails UNAVAILABLE, seconds")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.scheduler_addr:
            raise ValueError("the scheduler address is needed (--scheduler-addr host:port)")
        if self.max_concurrent_requests < 1:
            raise ValueError(f"--max-concurrent-requests must be >= 1, got {self.max_concurrent_requests}")
        if not self.scheduler_timeout_s > 0:
            raise ValueError(f"--scheduler-timeout-s must be > 0, got {self.scheduler_timeout_s}")
        if self.scheduler_outage_s < 0:
            raise ValueError(f"--scheduler-outage-s must be >= 0 (0: never resubmit), got {self.scheduler_outage_s}")
