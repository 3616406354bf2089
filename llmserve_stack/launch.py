"""The process specs of a local llmserve stack: which services start, in which order, with which
environment. `llmserve up` runs them; `compose.yaml` and the Kubernetes manifests use the same
commands and the same LLMSERVE_* variables (a test keeps them in sync).

Every service is started as `python -m <package>` and configured only through LLMSERVE_*
variables (each flag `--foo-bar` of a service reads `LLMSERVE_FOO_BAR`).
"""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass, field

from gateway.config import GatewayConfig
from kvstore_svc.config import KvStoreConfig
from llmserve.model_source import LoadFormat, ModelSettings
from llmserve.runtime.service_settings import ServiceSettings
from llmserve.settings import check_choices, exposed, setting, specs, to_env, values_env
from scheduler_svc.config import SchedulerServiceConfig
from worker_svc.config import WorkerConfig


@dataclass(frozen=True, kw_only=True)
class StackConfig:
    """What `llmserve up` runs: the stack's own settings, then the services' settings it exposes,
    each listed by name (`exposed`: the service's flag, variable, default and help). Every service
    whose config declares an exposed setting gets its value as that setting's LLMSERVE_* variable."""

    port: int = setting(50051, help="the gateway's port")
    host: str = setting("127.0.0.1", help="the address every service binds")
    num_workers: int = setting(1, flag="--workers", help="worker processes")
    log_dir: str = setting("", help="write each service's log to DIR/<service>.log (empty: to this terminal)")
    max_restarts: int = setting(5, help="restarts of a service that exits on its own within --restart-window-s; "
                                        "one more exit stops the stack (0: stop at the first exit)")
    restart_window_s: float = setting(60.0, help="the window of --max-restarts, seconds")
    log_format: str = exposed(ServiceSettings, "log_format")
    model: str = exposed(ModelSettings, "model")
    load_format: LoadFormat = exposed(ModelSettings, "load_format")
    tokenizer: str | None = exposed(GatewayConfig, "tokenizer")
    policy: str = exposed(SchedulerServiceConfig, "policy")
    cost_model: str = exposed(SchedulerServiceConfig, "cost_model")
    num_kv_blocks: int = exposed(WorkerConfig, "num_kv_blocks")
    block_size: int = exposed(WorkerConfig, "block_size")
    max_num_batched_tokens: int = exposed(WorkerConfig, "max_num_batched_tokens")
    max_num_seqs: int = exposed(WorkerConfig, "max_num_seqs")
    dtype: str = exposed(WorkerConfig, "dtype")
    device: str = exposed(WorkerConfig, "device")
    lease_ttl_s: float = exposed(KvStoreConfig, "lease_ttl_s")
    host_tier_bytes: int = exposed(KvStoreConfig, "host_tier_bytes")

    def __post_init__(self) -> None:
        if self.num_workers < 1:
            raise ValueError("--workers must be at least 1")
        if not 0 <= self.port < 65536:
            raise ValueError(f"--port {self.port} is not a TCP port")
        if self.max_restarts < 0:
            raise ValueError(f"--max-restarts must be >= 0, got {self.max_restarts}")
        if not self.restart_window_s > 0:
            raise ValueError(f"--restart-window-s must be > 0, got {self.restart_window_s}")
        # The services validate the rest when they start; catch what can be caught before that.
        check_choices(self)


# The config class each service module (`python -m <module>`) reads its settings into.
SERVICE_CONFIGS: dict[str, type] = {"kvstore_svc": KvStoreConfig, "worker_svc": WorkerConfig,
                                    "scheduler_svc": SchedulerServiceConfig, "gateway": GatewayConfig}


def exposed_env(config: StackConfig, service: type) -> dict[str, str]:
    """The LLMSERVE_* variables of the exposed settings that `service` (a config class) declares."""
    declared = {spec.name for spec in specs(service)}
    return to_env(config, [spec.name for spec in specs(StackConfig) if spec.name in declared])


@dataclass(frozen=True)
class ServiceSpec:
    """One process of the stack."""

    name: str  # kvstore, worker-0, ..., scheduler, gateway
    module: str  # python -m <module>
    address: str  # host:port it serves gRPC on
    env: dict[str, str] = field(default_factory=dict)
    ready_timeout_s: float = 120.0

    def argv(self, python: str = sys.executable) -> list[str]:
        return [python, "-m", self.module]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on `host` (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def service_specs(config: StackConfig, ports: dict[str, int] | None = None) -> list[ServiceSpec]:
    """The stack's processes in start order: kvstore, workers, scheduler, gateway.

    `ports` maps a service name to its port; services not named get a free port (the gateway gets
    `config.port`). Each process gets its wiring (address, peers, worker id) and the exposed
    settings it declares, as the LLMSERVE_* variables its config reads.
    """
    ports = dict(ports or {})
    host = config.host

    def address(name: str) -> str:
        if name not in ports:
            ports[name] = config.port if name == "gateway" else free_port(host)
        return f"{host}:{ports[name]}"

    def env(service: type, **wiring: object) -> dict[str, str]:
        return {**values_env(service, **wiring), **exposed_env(config, service)}

    kvstore_addr = address("kvstore")
    processes = [ServiceSpec("kvstore", "kvstore_svc", kvstore_addr, env(KvStoreConfig, address=kvstore_addr),
                          ready_timeout_s=30.0)]
    worker_addrs = []
    for index in range(config.num_workers):
        name = f"worker-{index}"
        worker_addr = address(name)
        worker_addrs.append(worker_addr)
        worker_env = env(WorkerConfig, address=worker_addr, kvstore_addr=kvstore_addr, worker_id=name)
        processes.append(ServiceSpec(name, "worker_svc", worker_addr, worker_env, ready_timeout_s=300.0))
    scheduler_addr = address("scheduler")
    scheduler_env = env(SchedulerServiceConfig, address=scheduler_addr, worker_addrs=tuple(worker_addrs),
                        kvstore_addr=kvstore_addr)
    processes.append(ServiceSpec("scheduler", "scheduler_svc", scheduler_addr, scheduler_env, ready_timeout_s=120.0))
    gateway_addr = address("gateway")
    gateway_env = env(GatewayConfig, address=gateway_addr, scheduler_addr=scheduler_addr)
    processes.append(ServiceSpec("gateway", "gateway", gateway_addr, gateway_env, ready_timeout_s=120.0))
    return processes
