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

from gateway.config import GatewayConfig, SloClassName
from kvstore_svc.config import KvStoreConfig
from llmserve.model_source import LoadFormat, ModelSettings
from llmserve.runtime.service_settings import ServiceSettings
from llmserve.settings import check_choices, config_from_env, exposed, setting, specs, to_env, values_env
from scheduler_svc.config import SchedulerServiceConfig
from worker_svc.config import WorkerConfig


@dataclass(frozen=True, kw_only=True)
class StackConfig:
    """What `llmserve up` runs: the stack's own settings, then the services' settings it exposes,
    each listed by name (`exposed`: the service's flag, variable, default and help). Every service
    whose config declares an exposed setting gets its value as that setting's LLMSERVE_* variable."""

    port: int = setting(50051, help="the gateway's gRPC port")
    http_port: int = setting(8000, help="the gateway's OpenAI-compatible HTTP port (0: no HTTP front)")
    metrics_port: int = setting(0, help="Prometheus /metrics ports from this one up: the gateway's, the "
                                        "scheduler's, the kvstore's, then one per worker (0: off)")
    host: str = setting("127.0.0.1", help="the address every service binds")
    num_workers: int = setting(1, flag="--workers", help="worker processes")
    log_dir: str = setting("", help="write each service's log to DIR/<service>.log (empty: to this terminal)")
    log_format: str = exposed(ServiceSettings, "log_format")
    model: str = exposed(ModelSettings, "model")
    load_format: LoadFormat = exposed(ModelSettings, "load_format")
    tokenizer: str | None = exposed(GatewayConfig, "tokenizer")
    default_slo_class: SloClassName = exposed(GatewayConfig, "default_slo_class")
    default_ttft_ms: float = exposed(GatewayConfig, "default_ttft_ms")
    default_tpot_ms: float = exposed(GatewayConfig, "default_tpot_ms")
    api_keys_file: str | None = exposed(GatewayConfig, "api_keys_file")
    tenant_max_concurrent_requests: int = exposed(GatewayConfig, "tenant_max_concurrent_requests")
    tenant_tokens_per_minute: int = exposed(GatewayConfig, "tenant_tokens_per_minute")
    max_prompt_bytes: int = exposed(GatewayConfig, "max_prompt_bytes")
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
        ports = (("--port", self.port), ("--http-port", self.http_port), ("--metrics-port", self.metrics_port))
        for flag, port in ports:
            if not 0 <= port < 65536:
                raise ValueError(f"{flag} {port} is not a TCP port")
        if self.metrics_port and self.metrics_port + 3 + self.num_workers > 65536:
            raise ValueError(f"--metrics-port {self.metrics_port} leaves no room for {3 + self.num_workers} ports")
        # The services validate the rest when they start; catch what can be caught before that.
        check_choices(self)


# The config class each service module (`python -m <module>`) reads its settings into.
SERVICE_CONFIGS: dict[str, type] = {"kvstore_svc": KvStoreConfig, "worker_svc": WorkerConfig,
                                    "scheduler_svc": SchedulerServiceConfig, "gateway": GatewayConfig}


# The stack's own settings: `metrics_port` shares its name with every service's, but is the first
# of a range, which `service_specs` hands out one port per process.
STACK_OWN = frozenset({"port", "http_port", "metrics_port", "host", "num_workers", "log_dir"})


def exposed_env(config: StackConfig, service: type) -> dict[str, str]:
    """The LLMSERVE_* variables of the exposed settings that `service` (a config class) declares."""
    declared = {spec.name for spec in specs(service)} - STACK_OWN
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

    # One metrics port per process, counted up from --metrics-port; always set, so that an
    # LLMSERVE_METRICS_PORT in the caller's environment cannot give every process the same one.
    metrics_order = ["gateway", "scheduler", "kvstore", *(f"worker-{i}" for i in range(config.num_workers))]

    def metrics_port(name: str) -> int:
        return config.metrics_port + metrics_order.index(name) if config.metrics_port else 0

    def env(service: type, name: str, **wiring: object) -> dict[str, str]:
        return {**values_env(service, metrics_port=metrics_port(name), **wiring), **exposed_env(config, service)}

    kvstore_addr = address("kvstore")
    kvstore_env = env(KvStoreConfig, "kvstore", address=kvstore_addr)
    processes = [ServiceSpec("kvstore", "kvstore_svc", kvstore_addr, kvstore_env,
                          ready_timeout_s=30.0)]
    worker_addrs = []
    for index in range(config.num_workers):
        name = f"worker-{index}"
        worker_addr = address(name)
        worker_addrs.append(worker_addr)
        worker_env = env(WorkerConfig, name, address=worker_addr, kvstore_addr=kvstore_addr, worker_id=name)
        processes.append(ServiceSpec(name, "worker_svc", worker_addr, worker_env, ready_timeout_s=300.0))
    scheduler_addr = address("scheduler")
    scheduler_env = env(SchedulerServiceConfig, "scheduler", address=scheduler_addr, worker_addrs=tuple(worker_addrs),
                        kvstore_addr=kvstore_addr)
    processes.append(ServiceSpec("scheduler", "scheduler_svc", scheduler_addr, scheduler_env, ready_timeout_s=120.0))
    gateway_addr = address("gateway")
    http_address = f"{host}:{config.http_port}" if config.http_port else ""
    gateway_env = env(GatewayConfig, "gateway", address=gateway_addr, scheduler_addr=scheduler_addr,
                      http_address=http_address)
    processes.append(ServiceSpec("gateway", "gateway", gateway_addr, gateway_env, ready_timeout_s=120.0))
    return processes


def preflight(config: StackConfig, processes: list[ServiceSpec]) -> None:
    """What can fail before anything starts, checked before anything starts (ValueError saying
    what to change): every process's settings build its config (cross-setting rules such as
    `--cost-model` needing `--policy bros` included), and every fixed port is free. A busy port
    would otherwise let the health check reach another stack and report this one ready."""
    for process in processes:
        try:
            config_from_env(SERVICE_CONFIGS[process.module], process.env)
        except ValueError as err:
            raise ValueError(f"{process.name}: {err}") from None
    fixed = [("--port", config.port), ("--http-port", config.http_port)]
    if config.metrics_port:
        fixed += [("--metrics-port", config.metrics_port + i) for i in range(3 + config.num_workers)]
    for flag, port in fixed:
        if port and not port_is_free(config.host, port):
            raise ValueError(f"{config.host}:{port} ({flag}) is already in use: stop what listens there "
                             f"(another `llmserve up`?) or choose another {flag}")


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
