"""The client commands as a new user meets them: `llmserve generate | cancel | model-info` as
processes against a live in-process stack, usage errors for bad values, the API's defaults in
`--help`, a "no server" message that says what to run, and Ctrl-C without a traceback."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from gateway.core.validate import DEFAULT_MAX_TOKENS
from llmserve.runtime.server import ServiceServer
from llmserve_stack.launch import free_port
from tests.integration.inprocess import Backend, running_backend

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def backend() -> AsyncIterator[Backend]:
    async with running_backend() as backend:
        yield backend


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(backend: Backend) -> ServiceServer:
    return await backend.gateway(http_address="")


async def llmserve(*args: str, timeout_s: float = 60.0) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "llmserve_stack", *args,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), timeout_s)
    return process.returncode or 0, out.decode(), err.decode()


async def test_generate_with_the_apis_defaults_and_usage(gateway: ServiceServer) -> None:
    code, out, err = await llmserve("generate", "Hello", "--address", gateway.address, "--usage", "--ignore-eos")
    assert code == 0, err
    assert f"completion {DEFAULT_MAX_TOKENS} tokens" in err and "class SERVICE_CLASS_REAL_TIME" in err


async def test_bad_values_are_usage_errors() -> None:
    for args, fragment in ((["--seed", "-1"], "--seed: -1 is out of range"),
                           (["--max-tokens", "0"], "--max-tokens: 0 is out of range"),
                           (["--temperature", "-0.5"], "--temperature"), (["--top-p", "0"], "--top-p")):
        code, _, err = await llmserve("generate", "Hi", *args)
        assert code == 2 and fragment in err and "Traceback" not in err, err


async def test_help_shows_the_apis_defaults() -> None:
    code, out, _ = await llmserve("generate", "--help")
    text = " ".join(out.split())
    assert code == 0
    assert f"(default: the server's, {DEFAULT_MAX_TOKENS})" in text and "(default: the server's, 1.0)" in text
    assert "the server's default SLO" in text


async def test_no_server_says_to_run_llmserve_up() -> None:
    for command in (["generate", "Hi"], ["model-info"], ["cancel", "x"]):
        code, _, err = await llmserve(*command, "--address", f"127.0.0.1:{free_port()}")
        assert code == 2 and "start one with `llmserve up`" in err and "Traceback" not in err, err


async def test_cancel_and_model_info(gateway: ServiceServer, backend: Backend) -> None:
    code, out, _ = await llmserve("model-info", "--address", gateway.address)
    assert code == 0 and "context length" in out and "policy          fcfs" in out
    generate = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "llmserve_stack", "generate", "Count:", "--address", gateway.address, "--ignore-eos",
        "--max-tokens", "2000", "--request-id", "cli-cancel", "--usage",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert generate.stdout is not None
    await asyncio.wait_for(generate.stdout.read(1), 60)  # it streams
    code, out, _ = await llmserve("cancel", "cli-cancel", "--address", gateway.address)
    assert code == 0 and out.strip() == "cancelled"
    _, err = await asyncio.wait_for(generate.communicate(), 60)
    assert generate.returncode == 0 and "[FINISH_REASON_CANCELLED] id cli-cancel" in err.decode()
    code, out, _ = await llmserve("cancel", "cli-cancel", "--address", gateway.address)
    assert code == 1 and "no running request" in out
    assert await backend.idle()


async def test_ctrl_c_during_generate_exits_130_without_a_traceback(gateway: ServiceServer, backend: Backend) -> None:
    generate = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "llmserve_stack", "generate", "Count:", "--address", gateway.address, "--ignore-eos",
        "--max-tokens", "2000", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert generate.stdout is not None
    await asyncio.wait_for(generate.stdout.read(1), 60)
    generate.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(generate.communicate(), 30)
    assert generate.returncode == 130 and "Traceback" not in err.decode(), err.decode()
    assert await backend.idle()  # the interrupted stream was aborted upstream


async def test_up_refuses_a_busy_port_and_a_bad_combination_before_starting_anything() -> None:
    import socket
    import time

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        t0 = time.perf_counter()
        code, out, err = await llmserve("up", "--port", str(port), "--http-port", str(free_port()))
        assert code == 2 and f"127.0.0.1:{port} (--port) is already in use" in err, err
        assert "listening" not in out and time.perf_counter() - t0 < 20  # no model was loaded
    code, _, err = await llmserve("up", "--port", str(free_port()), "--http-port", str(free_port()),
                                  "--cost-model", "h100_llama3_8b")
    assert code == 2 and "--cost-model is used by --policy bros or tempo only" in err, err
    code, _, err = await llmserve("up", "--policy", "lifo")
    assert code == 2 and "choose one of" in err
