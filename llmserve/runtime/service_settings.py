"""The settings every service process takes (address, logs, metrics, drain), declared once; each
service's config class extends `ServiceSettings` with its own."""

from __future__ import annotations

from dataclasses import dataclass

from llmserve.settings import check_choices, setting

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("json", "text")


@dataclass(frozen=True, kw_only=True)
class ServiceSettings:
    """Where a service listens, how it logs, its metrics port and its drain. A service redeclares
    `address` (its own default port) with `llmserve.settings.redefault`."""

    address: str = setting("127.0.0.1:0", help="host:port to serve gRPC on (port 0: any free port)")
    log_level: str = setting("INFO", choices=LOG_LEVELS, parse=str.upper, help="log level")
    log_format: str = setting("json", choices=LOG_FORMATS, help="json lines (with request and trace ids) or text")
    metrics_port: int = setting(0, help="HTTP port of Prometheus /metrics (0: off)")
    # SIGTERM first turns health NOT_SERVING, then in-flight calls get this long to finish.
    drain_grace_s: float = setting(5.0, help="grace in-flight calls get on SIGTERM, seconds")

    def __post_init__(self) -> None:
        check_choices(self)
        if self.drain_grace_s < 0:
            raise ValueError(f"--drain-grace-s must be >= 0, got {self.drain_grace_s}")
