"""Configuration of the gateway service: each field a setting (flag `--x-y`, variable LLMSERVE_X_Y)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from llmserve.model_source import ModelSettings
from llmserve.runtime.service_settings import ServiceSettings
from llmserve.settings import redefault, setting

SloClassName = Literal["real_time", "deadline", "best_effort"]

MIB = 1024 * 1024


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
    http_address: str = setting("127.0.0.1:8000", help="host:port of the OpenAI-compatible HTTP front (/v1/*, "
                                                       "/health, /metrics); empty: no HTTP front")
    # A request without an SLO runs as an interactive chat: real-time with targets loose enough for
    # a CPU stack (first token within 2 s, then 5 tokens/s or better), which is what a person
    # typing into a chat box expects; batch clients say best_effort.
    default_slo_class: SloClassName = setting("real_time", help="service class of a request that sets no SLO")
    default_ttft_ms: float = setting(2000.0, help="time to first token of the default SLO (and of a real-time "
                                                  "SLO from HTTP headers that names no TTFT), milliseconds")
    default_tpot_ms: float = setting(200.0, help="time per output token of the default SLO (and of a real-time "
                                                 "SLO from HTTP headers that names no TPOT), milliseconds")
    default_deadline_ms: float = setting(60000.0, help="deadline of the default SLO when its class is deadline, "
                                                       "milliseconds")
    api_keys_file: str | None = setting(None, help="file of API keys, one `TENANT KEY` per line (KEY may be "
                                                   "sha256:HEX); set: every call needs `authorization: Bearer KEY` "
                                                   "and runs as that key's tenant; unset: no keys (local use)")
    tenant_max_concurrent_requests: int = setting(0, help="running requests per tenant beyond this get "
                                                          "RESOURCE_EXHAUSTED / HTTP 429 (0: no limit)")
    tenant_tokens_per_minute: int = setting(0, help="prompt + completion tokens per tenant per sliding minute; "
                                                    "beyond it RESOURCE_EXHAUSTED / HTTP 429 (0: no limit)")
    max_prompt_bytes: int = setting(MIB, help="largest prompt (text or chat messages, UTF-8 bytes) accepted; "
                                              "checked before tokenizing")
    tokenizer_threads: int = setting(2, help="threads that tokenize prompts (off the event loop)")
    stats_interval_s: float = setting(0.5, help="how often the gateway refreshes the scheduler's queue and KV "
                                                "figures that /metrics exports as vllm:* gauges, seconds")

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
        for flag, value in (("--default-ttft-ms", self.default_ttft_ms), ("--default-tpot-ms", self.default_tpot_ms),
                            ("--default-deadline-ms", self.default_deadline_ms)):
            if not value > 0:
                raise ValueError(f"{flag} must be > 0, got {value}")
        for flag, count in (("--tenant-max-concurrent-requests", self.tenant_max_concurrent_requests),
                            ("--tenant-tokens-per-minute", self.tenant_tokens_per_minute)):
            if count < 0:
                raise ValueError(f"{flag} must be >= 0 (0: no limit), got {count}")
        if self.max_prompt_bytes < 1:
            raise ValueError(f"--max-prompt-bytes must be >= 1, got {self.max_prompt_bytes}")
        if self.tokenizer_threads < 1:
            raise ValueError(f"--tokenizer-threads must be >= 1, got {self.tokenizer_threads}")
        if not 0 < self.stats_interval_s <= 1.0:
            raise ValueError(f"--stats-interval-s must be in (0, 1] (the picker needs figures at least once a "
                             f"second), got {self.stats_interval_s}")
