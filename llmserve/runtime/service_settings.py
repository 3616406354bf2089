"""The settings every service process takes (address, logs, metrics, drain, TLS), declared once;
each service's config class extends `ServiceSettings` with its own."""

from __future__ import annotations

from dataclasses import dataclass

from llmserve.runtime.tls import Tls
from llmserve.settings import check_choices, setting, specs

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("json", "text")
# The settings of a process's TLS identity: all three, or none (plaintext).
TLS_SETTINGS = ("tls_cert", "tls_key", "tls_ca")


@dataclass(frozen=True, kw_only=True)
class ServiceSettings:
    """Where a service listens, how it logs, its metrics port, its drain and its TLS identity. A
    service redeclares `address` (its own default port) with `llmserve.settings.redefault`."""

    address: str = setting("127.0.0.1:0", help="host:port to serve gRPC on (port 0: any free port)")
    log_level: str = setting("INFO", choices=LOG_LEVELS, parse=str.upper, help="log level")
    log_format: str = setting("json", choices=LOG_FORMATS, help="json lines (with request and trace ids) or text")
    metrics_port: int = setting(0, help="HTTP port of Prometheus /metrics (0: off)")
    # SIGTERM first turns health NOT_SERVING, then in-flight calls get this long to finish.
    drain_grace_s: float = setting(5.0, help="grace in-flight calls get on SIGTERM, seconds")
    # Off only for a local single-user run: `llmserve up --tls`, compose and the Kubernetes
    # manifests set all three (llmserve.runtime.tls says who must present what).
    tls_cert: str | None = setting(None, help="PEM certificate (chain) this service presents to callers and peers; "
                                              "with --tls-key and --tls-ca it turns TLS on (empty: plaintext)")
    tls_key: str | None = setting(None, help="PEM private key of --tls-cert")
    tls_ca: str | None = setting(None, help="PEM CA of the cluster: peers are verified against it, and an internal "
                                            "service serves only callers presenting a certificate it signed (mTLS)")

    def __post_init__(self) -> None:
        check_choices(self)
        if self.drain_grace_s < 0:
            raise ValueError(f"--drain-grace-s must be >= 0, got {self.drain_grace_s}")
        flags = {spec.name: spec.flag for spec in specs(ServiceSettings)}
        missing = [flags[name] for name in TLS_SETTINGS if not getattr(self, name)]
        if 0 < len(missing) < len(TLS_SETTINGS):
            raise ValueError(f"--tls-cert, --tls-key and --tls-ca go together: {', '.join(missing)} missing")

    def load_tls(self) -> Tls | None:
        """This process's identity, read from the --tls-* files (OSError or ValueError naming the
        file that cannot be used); None when TLS is off."""
        if not self.tls_ca:
            return None
        return Tls.from_files(self.tls_ca, self.tls_cert, self.tls_key)
