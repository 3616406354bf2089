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


@dataclass(frozen=True)
class StackConfig:
    """What `llmserve up` was asked for."""

    port: int = 50051  # the gateway's public port
    host: str = "127.0.0.1"
    num_workers: int = 1
    model: str = "default"
    load_format: str = "auto"
    tokenizer: str = ""
    policy: str = "fcfs"
    cost_model: str = ""  # step-time coefficients JSON for bros and tempo (e.g. the simulator's CPU profile)
    num_kv_blocks: int = 0  # 0: the worker sizes its cache itself
    block_size: int = 16
    max_num_batched_tokens: int = 512
    max_num_seqs: int = 64
    dtype: str = "auto"
    device: str = "auto"
    lease_ttl_s: float = 10.0
    host_tier_gb: float = 2.0
    log_format: str = "json"
    extra_env: tuple[tuple[str, str], ...] = ()  # added to every service (e.g. OTEL_*)

    def __post_init__(self) -> None:
        if self.num_workers < 1:
            raise ValueError("--workers must be at least 1")
        if not 0 <= self.port < 65536:
            raise ValueError(f"--port {self.port} is not a TCP port")


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
    `config.port`).
    """
    ports = dict(ports or {})
    host = config.host

    def address(name: str) -> str:
        if name not in ports:
            ports[name] = config.port if name == "gateway" else free_port(host)
        return f"{host}:{ports[name]}"

    common = {"LLMSERVE_LOG_FORMAT": config.log_format, **dict(config.extra_env)}
    kvstore_addr = address("kvstore")
    specs = [
        ServiceSpec(
            "kvstore",
            "kvstore_svc",
            kvstore_addr,
            {
                **common,
                "LLMSERVE_ADDRESS": kvstore_addr,
                "LLMSERVE_LEASE_TTL_S": str(config.lease_ttl_s),
                "LLMSERVE_HOST_TIER_GB": str(config.host_tier_gb),
            },
            ready_timeout_s=30.0,
        )
    ]
    worker_addrs = []
    for index in range(config.num_workers):
        name = f"worker-{index}"
        worker_addr = address(name)
        worker_addrs.append(worker_addr)
        env = {
            **common,
            "LLMSERVE_ADDRESS": worker_addr,
            "LLMSERVE_KVSTORE_ADDR": kvstore_addr,
            "LLMSERVE_WORKER_ID": name,
            "LLMSERVE_MODEL": config.model,
            "LLMSERVE_LOAD_FORMAT": config.load_format,
            "LLMSERVE_BLOCK_SIZE": str(config.block_size),
            "LLMSERVE_MAX_NUM_BATCHED_TOKENS": str(config.max_num_batched_tokens),
            "LLMSERVE_MAX_NUM_SEQS": str(config.max_num_seqs),
            "LLMSERVE_DTYPE": config.dtype,
            "LLMSERVE_DEVICE": config.device,
        }
        if config.num_kv_blocks:
            env["LLMSERVE_NUM_KV_BLOCKS"] = str(config.num_kv_blocks)
        specs.append(ServiceSpec(name, "worker_svc", worker_addr, env, ready_timeout_s=300.0))
    scheduler_addr = address("scheduler")
    scheduler_env = {
        **common,
        "LLMSERVE_ADDRESS": scheduler_addr,
        "LLMSERVE_WORKER_ADDRS": ",".join(worker_addrs),
        "LLMSERVE_KVSTORE_ADDR": kvstore_addr,
        "LLMSERVE_POLICY": config.policy,
    }
    if config.cost_model:
        scheduler_env["LLMSERVE_COST_MODEL"] = config.cost_model
    specs.append(ServiceSpec("scheduler", "scheduler_svc", scheduler_addr, scheduler_env, ready_timeout_s=120.0))
    gateway_addr = address("gateway")
    gateway_env = {
        **common,
        "LLMSERVE_ADDRESS": gateway_addr,
        "LLMSERVE_SCHEDULER_ADDR": scheduler_addr,
        "LLMSERVE_MODEL": config.model,
        "LLMSERVE_LOAD_FORMAT": config.load_format,
    }
    if config.tokenizer:
        gateway_env["LLMSERVE_TOKENIZER"] = config.tokenizer
    specs.append(ServiceSpec("gateway", "gateway", gateway_addr, gateway_env, ready_timeout_s=120.0))
    return specs
