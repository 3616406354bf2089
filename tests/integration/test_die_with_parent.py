"""How the supervisor starts services (`llmserve_stack.die_with_parent`): children spawned while
gRPC threads are busy in this process all start (with the former `preexec_fn`, which made CPython
fork, about a third died of SIGSEGV or SIGABRT in gRPC's fork handlers), a child dies with its
parent, and a child whose parent is already gone never runs its command."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

from llmserve.runtime.channel import wait_healthy
from llmserve.runtime.server import start_server
from llmserve_stack.die_with_parent import PARENT_GONE_EXIT, command_dying_with_parent


async def test_children_spawned_under_grpc_traffic_all_start() -> None:
    server = await start_server(lambda s: None, [], "127.0.0.1:0")
    await server.set_serving()
    stop = asyncio.Event()

    async def health_checks() -> None:  # what the supervisor does while it starts the next service
        while not stop.is_set():
            await wait_healthy(server.address, timeout_s=5)

    checks = [asyncio.create_task(health_checks()) for _ in range(4)]
    failures = []
    try:
        for _ in range(40):
            child = subprocess.Popen(command_dying_with_parent(["/bin/true"]), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
            _, err = await asyncio.to_thread(child.communicate)
            if child.returncode != 0:
                failures.append((child.returncode, err.decode()[-300:]))
    finally:
        stop.set()
        await asyncio.gather(*checks, return_exceptions=True)
        await server.stop(0)
    assert failures == []


def test_the_child_dies_with_its_parent() -> None:
    parent_code = (
        "import subprocess, sys, time\n"
        "from llmserve_stack.die_with_parent import command_dying_with_parent\n"
        "child = subprocess.Popen(command_dying_with_parent(['sleep', '60']))\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True,
                              cwd=os.getcwd())
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    deadline = time.monotonic() + 10
    while _command_of(child_pid) != "sleep" and time.monotonic() < deadline:  # exec'd into sleep
        time.sleep(0.05)
    assert _command_of(child_pid) == "sleep"
    parent.kill()
    parent.wait()
    while _command_of(child_pid) == "sleep" and time.monotonic() < deadline + 10:
        time.sleep(0.05)
    assert _command_of(child_pid) != "sleep", "the child outlived its SIGKILLed parent"


def _command_of(pid: int) -> str | None:
    """The name of a live (not zombie) process, or None."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read()
    except FileNotFoundError:
        return None
    name, state = fields[fields.index("(") + 1:fields.rindex(")")], fields[fields.rindex(")") + 2]
    return None if state in "ZX" else name


def test_a_child_whose_parent_is_gone_does_not_run(tmp_path) -> None:
    marker = tmp_path / "ran"
    not_my_parent = os.getpid() + 10_000_000  # above any pid_max: no such process
    result = subprocess.run(command_dying_with_parent(["touch", str(marker)], parent_pid=not_my_parent),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == PARENT_GONE_EXIT and "is gone" in result.stderr
    assert not marker.exists()
    result = subprocess.run(command_dying_with_parent(["touch", str(marker)]), capture_output=True, timeout=30)
    assert result.returncode == 0 and marker.exists()


def test_the_supervisor_passes_no_preexec_fn(monkeypatch) -> None:
    from llmserve_stack import supervisor
    from llmserve_stack.launch import ServiceSpec

    seen: dict[str, object] = {}

    class Recorded:
        pid = 1

        def __init__(self, argv: list[str], **kwargs: object) -> None:
            seen.update(kwargs, argv=argv)

        def wait(self) -> int:
            return 0

    async def spawn() -> None:
        monkeypatch.setattr(supervisor.subprocess, "Popen", Recorded)
        supervisor.Stack([])._spawn(ServiceSpec("kvstore", "kvstore_svc", "127.0.0.1:1"))
        await asyncio.sleep(0.05)

    asyncio.run(spawn())
    assert "preexec_fn" not in seen
    assert seen["argv"] == command_dying_with_parent([sys.executable, "-m", "kvstore_svc"])
