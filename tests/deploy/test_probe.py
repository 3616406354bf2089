"""`python -m llmserve.runtime.probe`, the container health check, against a real server: exit 0
only once the service says SERVING; wildcard listen addresses from LLMSERVE_ADDRESS are probed on
loopback; over mTLS with the service's LLMSERVE_TLS_* identity."""

from __future__ import annotations

import asyncio
import os
import socket
import sys

import pytest

from llmserve.runtime.probe import probe_target
from llmserve.runtime.server import start_server


async def _probe(*args: str, env_address: str | None = None, env: dict[str, str] | None = None) -> tuple[int, str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LLMSERVE_")}, **(env or {})}
    if env_address is not None:
        env["LLMSERVE_ADDRESS"] = env_address
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "llmserve.runtime.probe", *args, env=env, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    return proc.returncode or 0, err.decode()


async def test_probe_follows_health_status() -> None:
    server = await start_server(lambda s: None, [], address="127.0.0.1:0")
    try:
        code, err = await _probe(server.address, "--timeout-s", "2")
        assert code == 1 and "NOT_SERVING" in err
        await server.set_serving()
        assert (await _probe(server.address))[0] == 0
        assert (await _probe(env_address=f"0.0.0.0:{server.port}"))[0] == 0
    finally:
        await server.stop(0)


async def test_probe_fails_on_a_closed_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, err = await _probe(f"127.0.0.1:{port}", "--timeout-s", "1")
    assert code == 1 and ("UNAVAILABLE" in err or "DEADLINE_EXCEEDED" in err)


async def test_probe_needs_an_address() -> None:
    code, err = await _probe()
    assert code == 2 and "LLMSERVE_ADDRESS" in err


@pytest.mark.parametrize(
    ("listen", "target"),
    [("0.0.0.0:50051", "127.0.0.1:50051"), ("[::]:7", "127.0.0.1:7"), (":9", "127.0.0.1:9"), ("worker-0.worker:50051", "worker-0.worker:50051")],
)
def test_probe_target(listen: str, target: str) -> None:
    assert probe_target(listen) == target


def test_probe_target_refuses_garbage() -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        probe_target("localhost")


async def test_probe_speaks_mtls_with_the_services_identity(tmp_path) -> None:
    """With the LLMSERVE_TLS_* variables a container has, the probe presents its identity, as an
    internal service's mTLS asks; without them it is refused like any outsider."""
    from llmserve_stack.certs import LocalCa

    ca = LocalCa.create(tmp_path, days=1)
    served, probing = ca.issue("kvstore", ["127.0.0.1"]), ca.issue("probe", ["localhost"])
    server = await start_server(lambda s: None, [], address="127.0.0.1:0", tls=ca.tls(served))
    identity = {"LLMSERVE_TLS_CERT": str(probing.cert), "LLMSERVE_TLS_KEY": str(probing.key),
                "LLMSERVE_TLS_CA": str(ca.cert)}
    try:
        await server.set_serving()
        assert (await _probe(env_address=f"0.0.0.0:{server.port}", env=identity))[0] == 0
        code, err = await _probe(server.address, "--timeout-s", "2")
        assert code == 1 and "UNAVAILABLE" in err
        code, err = await _probe(server.address, env={**identity, "LLMSERVE_TLS_KEY": ""})
        assert code == 2 and "--tls-key" in err
        code, err = await _probe(server.address, env={**identity, "LLMSERVE_TLS_CA": str(tmp_path / "missing.crt")})
        assert code == 2 and "missing.crt" in err
    finally:
        await server.stop(0)
