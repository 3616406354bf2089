"""An in-process stack on 127.0.0.1:0 for the gateway's integration tests: kvstore, one worker
(dummy SmolLM2 weights on CPU: real vocabulary and chat template, loads in seconds), the scheduler,
and any number of gateways over them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from gateway.config import GatewayConfig
from gateway.server import start_gateway
from llmserve.runtime.channel import open_channel
from llmserve.runtime.server import ServiceServer
from llmserve.v1 import scheduler_pb2, scheduler_pb2_grpc


@dataclass
class Backend:
    """kvstore + worker + scheduler, and the gateways started over them."""

    scheduler: ServiceServer
    servers: list[ServiceServer]
    tokenizer: Any
    gateways: list[ServiceServer] = field(default_factory=list)

    async def gateway(self, **config: Any) -> ServiceServer:
        """A gateway over this backend; its HTTP front on a free port unless `http_address` says."""
        options = {"http_address": "127.0.0.1:0", "max_concurrent_requests": 64, **config}
        running = await start_gateway(GatewayConfig(scheduler_addr=self.scheduler.address, **options),
                                      tokenizer=self.tokenizer)
        self.gateways.append(running)
        return running

    async def idle(self, timeout_s: float = 5.0) -> bool:
        """Whether the scheduler holds no request (none waiting or running) within the timeout."""
        async with open_channel(self.scheduler.address) as channel:
            stub = scheduler_pb2_grpc.SchedulerStub(channel)
            for _ in range(int(timeout_s / 0.05)):
                stats = await stub.GetStats(scheduler_pb2.GetStatsRequest())
                if stats.num_running == 0 and stats.num_waiting == 0:
                    return True
                await asyncio.sleep(0.05)
        return False

    async def stop(self) -> None:
        for server in reversed([*self.servers, *self.gateways]):
            await server.stop(0)


async def start_backend(num_kv_blocks: int = 256, **scheduler_options: Any) -> Backend:
    from kvstore_svc.config import KvStoreConfig
    from kvstore_svc.server import start_kvstore
    from llmserve.model_source import load_tokenizer, resolve_model
    from scheduler_svc.config import SchedulerServiceConfig
    from scheduler_svc.server import start_scheduler
    from worker_svc.start import start_worker
    from worker_svc.config import WorkerConfig

    servers: list[ServiceServer] = []
    try:
        loading = asyncio.create_task(asyncio.to_thread(load_tokenizer, resolve_model("default")))
        kvstore = await start_kvstore(KvStoreConfig())
        servers.append(kvstore)
        worker_config = WorkerConfig(model="default", load_format="dummy", warmup=False, kvstore_addr=kvstore.address,
                                     worker_id="w0", num_kv_blocks=num_kv_blocks, block_size=16,
                                     max_num_batched_tokens=256, max_num_seqs=8, device="cpu", dtype="float32")
        servers.append(await start_worker(worker_config, "127.0.0.1:0"))
        scheduler = await start_scheduler(SchedulerServiceConfig(worker_addrs=(servers[-1].address,),
                                                                 kvstore_addr=kvstore.address, **scheduler_options))
        servers.append(scheduler)
        return Backend(scheduler, servers, await loading)
    except BaseException:
        for server in reversed(servers):
            await server.stop(0)
        raise


@contextlib.asynccontextmanager
async def running_backend(num_kv_blocks: int = 256, **scheduler_options: Any) -> AsyncIterator[Backend]:
    """`start_backend`, stopped (with its gateways) on leaving: the body of a backend fixture."""
    backend = await start_backend(num_kv_blocks, **scheduler_options)
    try:
        yield backend
    finally:
        await backend.stop()


def http_base(gateway: ServiceServer) -> str:
    return f"http://127.0.0.1:{gateway.service.http_port}"  # type: ignore[union-attr]
