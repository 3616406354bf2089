"""The transport every service shares, through the four real services on 127.0.0.1:0 (in this
process) with TLS on, each with its own certificate from one throwaway CA:

- the stack works over mutual TLS (gateway → scheduler → worker → kvstore), and a public client
  needs only the CA to stream from the gateway;
- an outsider (plaintext, TLS without a client certificate, a certificate another CA signed) is
  refused on every internal port (scheduler, worker, kvstore) before any RPC: the calls of the
  probe that found the doors open (`KvStore.Apply`, `KvStore.Heartbeat`, `Scheduler.Submit`) fail
  UNAVAILABLE, and so does health;
- undecodable bytes to every method of every service get INVALID_ARGUMENT naming the message
  type, with at most one warning line per server and no error or traceback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.client import build_request
from llmserve.runtime.channel import open_channel
from llmserve.runtime.server import ServiceServer
from llmserve.runtime.tls import Tls
from llmserve.v1 import (gateway_pb2, gateway_pb2_grpc, kvstore_pb2, kvstore_pb2_grpc, scheduler_pb2,
                         scheduler_pb2_grpc, worker_pb2, worker_pb2_grpc)
from llmserve_stack.certs import LocalCa
from tests.unit.worker.helpers import save_tiny_checkpoint

pytestmark = pytest.mark.asyncio(loop_scope="module")

GARBAGE = b"\xff\xff\xff\xff"  # an unterminated varint: no message type decodes it
WORKER_ID = "w0"


@dataclass
class TlsStack:
    servers: dict[str, ServiceServer]  # kvstore, worker, scheduler, gateway
    member: Tls  # a cluster identity that is none of the services'
    public: Tls  # the CA only: what a client of the gateway holds
    stranger: Tls  # trusts the CA, presents a certificate another CA signed


def _settings(ca: LocalCa, name: str) -> dict[str, str]:
    issued = ca.issue(name, ["127.0.0.1"])
    return {"tls_cert": str(issued.cert), "tls_key": str(issued.key), "tls_ca": str(ca.cert)}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TlsStack]:
    from gateway.config import GatewayConfig
    from gateway.server import start_gateway
    from kvstore_svc.config import KvStoreConfig
    from kvstore_svc.server import start_kvstore
    from llmserve.model_source import load_tokenizer, resolve_model
    from scheduler_svc.config import SchedulerServiceConfig
    from scheduler_svc.server import start_scheduler
    from worker_svc.config import WorkerConfig
    from worker_svc.start import start_worker

    folder: Path = tmp_path_factory.mktemp("tls")
    ca = LocalCa.create(folder / "ca", days=1)
    other = LocalCa.create(folder / "other", days=1)
    stranger = other.issue("stranger", ["127.0.0.1"])
    servers: dict[str, ServiceServer] = {}
    try:
        # A tiny Llama (vocabulary 96) loads in a second; prompts are token ids, which the
        # gateway's tokenizer (SmolLM2's, loading meanwhile) decodes all the same. Saved first: it
        # imports transformers, which the tokenizer's thread must not import at the same time.
        save_tiny_checkpoint("llama", folder / "model")
        loading = asyncio.create_task(asyncio.to_thread(load_tokenizer, resolve_model("default")))
        servers["kvstore"] = await start_kvstore(KvStoreConfig(**_settings(ca, "kvstore")))
        servers["worker"] = await start_worker(WorkerConfig(
            model=str(folder / "model"), kvstore_addr=servers["kvstore"].address, worker_id=WORKER_ID,
            num_kv_blocks=24, block_size=4, max_num_batched_tokens=64, max_num_seqs=4, device="cpu", dtype="float32",
            **_settings(ca, "worker")))
        servers["scheduler"] = await start_scheduler(SchedulerServiceConfig(
            worker_addrs=(servers["worker"].address,), kvstore_addr=servers["kvstore"].address,
            **_settings(ca, "scheduler")))
        servers["gateway"] = await start_gateway(
            GatewayConfig(scheduler_addr=servers["scheduler"].address, **_settings(ca, "gateway")),
            tokenizer=await loading)
        yield TlsStack(servers, member=ca.tls(ca.issue("member", ["localhost"])), public=ca.tls(None),
                       stranger=Tls(ca=ca.cert.read_bytes(), cert=stranger.cert.read_bytes(),
                                    key=stranger.key.read_bytes()))
    finally:
        for server in reversed(list(servers.values())):
            await server.stop(0)


async def _health(address: str, tls: Tls | None) -> str:
    async with open_channel(address, tls=tls) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.aio.AioRpcError as err:
            return err.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


async def _generate(address: str, tls: Tls | None) -> list[int]:
    request = build_request([5, 6, 7, 8], max_tokens=4, temperature=0.0, ignore_eos=True)
    async with open_channel(address, tls=tls) as channel:
        stream = gateway_pb2_grpc.GatewayStub(channel).Generate(request, timeout=60)
        return [token async for response in stream for token in response.token_ids]


async def test_the_stack_serves_over_mutual_tls(stack: TlsStack) -> None:
    gateway = stack.servers["gateway"].address
    assert len(await _generate(gateway, stack.public)) == 4  # public client: the CA, no certificate
    assert len(await _generate(gateway, stack.member)) == 4
    for name, server in stack.servers.items():
        assert await _health(server.address, stack.member) == "SERVING", name


async def test_the_gateway_refuses_plaintext(stack: TlsStack) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _generate(stack.servers["gateway"].address, None)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


# What the probe did from outside: lease/release in a worker's pool, keep a worker's leases
# alive, submit past the gateway; plus each internal service's own first call.
async def _doors(channel: grpc.aio.Channel) -> dict[str, Any]:
    kv = kvstore_pb2_grpc.KvStoreStub(channel)
    return {
        "KvStore.Apply": lambda: kv.Apply(kvstore_pb2.ApplyRequest(worker_id=WORKER_ID, release_request_ids=["x"]),
                                          timeout=5),
        "KvStore.Heartbeat": lambda: kv.Heartbeat(kvstore_pb2.HeartbeatRequest(worker_id=WORKER_ID), timeout=5),
        "Worker.Describe": lambda: worker_pb2_grpc.WorkerStub(channel).Describe(worker_pb2.DescribeRequest(),
                                                                                timeout=5),
        "Scheduler.Submit": lambda: _drain(scheduler_pb2_grpc.SchedulerStub(channel).Submit(
            scheduler_pb2.SubmitRequest(request_id="intruder", prompt_token_ids=[1, 2, 3]), timeout=5)),
    }


async def _drain(call: Any) -> None:
    async for _ in call:
        pass


DOOR_OF = {"kvstore": ("KvStore.Apply", "KvStore.Heartbeat"), "worker": ("Worker.Describe",),
           "scheduler": ("Scheduler.Submit",)}


@pytest.mark.parametrize("outsider", ["plaintext", "no certificate", "another CA's certificate"])
@pytest.mark.parametrize("service", ["kvstore", "worker", "scheduler"])
async def test_an_outsider_is_refused_on_every_internal_port(stack: TlsStack, service: str, outsider: str) -> None:
    tls = {"plaintext": None, "no certificate": stack.public, "another CA's certificate": stack.stranger}[outsider]
    address = stack.servers[service].address
    assert await _health(address, tls) == "UNAVAILABLE"
    async with open_channel(address, tls=tls) as channel:
        doors = await _doors(channel)
        for door in DOOR_OF[service]:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await doors[door]()
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE, door
    assert await _health(address, stack.member) == "SERVING"  # the port is up: it refused


async def test_a_member_gets_through_the_same_doors(stack: TlsStack) -> None:
    """The control of the test above: with the identity, each call reaches its handler."""
    async with open_channel(stack.servers["kvstore"].address, tls=stack.member) as channel:
        doors = await _doors(channel)
        assert (await doors["KvStore.Heartbeat"]()).num_leases == 0
        assert (await doors["KvStore.Apply"]()).num_released == 0
    async with open_channel(stack.servers["worker"].address, tls=stack.member) as channel:
        assert (await (await _doors(channel))["Worker.Describe"]()).worker_id == WORKER_ID


def _methods(server_name: str) -> list[tuple[str, Any]]:
    """(full method path, method descriptor) of every RPC a server registers, health's Check included."""
    files = {"kvstore": (kvstore_pb2, "KvStore"), "worker": (worker_pb2, "Worker"),
             "scheduler": (scheduler_pb2, "Scheduler"), "gateway": (gateway_pb2, "Gateway")}
    module, name = files[server_name]
    services = [module.DESCRIPTOR.services_by_name[name], health_pb2.DESCRIPTOR.services_by_name["Health"]]
    return [(f"/{service.full_name}/{method.name}", method) for service in services for method in service.methods
            if method.name != "Watch"]  # Health.Watch streams forever: Check covers health


async def _send_garbage(channel: grpc.aio.Channel, path: str, method: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        if method.client_streaming and method.server_streaming:
            await _drain(channel.stream_stream(path)(iter([GARBAGE]), timeout=10))
        elif method.client_streaming:
            await channel.stream_unary(path)(iter([GARBAGE]), timeout=10)
        elif method.server_streaming:
            await _drain(channel.unary_stream(path)(GARBAGE, timeout=10))
        else:
            await channel.unary_unary(path)(GARBAGE, timeout=10)
    return info.value


async def test_undecodable_bytes_get_invalid_argument_on_every_service(
    stack: TlsStack, caplog: pytest.LogCaptureFixture
) -> None:
    sent = 0
    with caplog.at_level(logging.INFO):
        for name, server in stack.servers.items():
            async with open_channel(server.address, tls=stack.member) as channel:
                for path, method in _methods(name):
                    if path == "/llmserve.v1.Worker/Execute":
                        # The worker serves one Execute stream, the scheduler's, and refuses a second
                        # before reading it; test_undecodable.py covers a bidi stream's decoding.
                        continue
                    for _ in range(3):
                        error = await _send_garbage(channel, path, method)
                        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (path, error.details())
                        assert f"does not decode as {method.input_type.full_name}" in (error.details() or ""), path
                        sent += 1
    assert sent >= 3 * 14
    warnings = [r for r in caplog.records if r.name == "llmserve.runtime.undecodable"]
    assert 1 <= len(warnings) <= len(stack.servers), [r.getMessage() for r in warnings]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text
    assert len(await _generate(stack.servers["gateway"].address, stack.public)) == 4  # still serving
