"""Start a child that the kernel stops when its parent dies, without forking the parent:

    python -m llmserve_stack.die_with_parent PARENT_PID -- COMMAND [ARG ...]

asks the kernel (Linux `prctl(PR_SET_PDEATHSIG, SIGTERM)`) to send SIGTERM when PARENT_PID dies,
then becomes COMMAND (exec: same process, the request survives it). `command_dying_with_parent`
builds that command line, for `subprocess.Popen`. So even a SIGKILLed `llmserve up` leaves no
orphaned service behind.

Why not `Popen(..., preexec_fn=...)`, which did this before: a `preexec_fn` makes CPython fork()
instead of vfork(), and fork() runs gRPC's pthread_atfork handlers in a process whose gRPC threads
are busy (the supervisor's health checks; pytest's channels). Measured, spawning /bin/true 300 times
while four health-check loops ran in the parent: 82 children died of SIGSEGV and 5 of SIGABRT with
`preexec_fn` (gRPC logged "Other threads are currently calling into gRPC, skipping fork()
handlers"; or, where its handlers ran, the child's restarted poller found its epoll fd closed by
`close_fds` and aborted with "epoll_wait error: Bad file descriptor", the kvstore's death at start
in a test), none without it. This is the signal 6 of a worker in tests/deploy/test_compose_stack.py.
Without `preexec_fn` CPython spawns with vfork(), which runs no fork handler, and the child runs no
Python code before exec.

The death signal follows the thread that spawned the child: spawn from a thread that lives as
long as the parent (the event loop's), not from a short-lived worker thread.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Sequence

_PR_SET_PDEATHSIG = 1
PARENT_GONE_EXIT = 3  # the parent died before the request took hold: COMMAND never ran


def command_dying_with_parent(command: Sequence[str], parent_pid: int | None = None,
                              python: str = sys.executable) -> list[str]:
    """`command` wrapped so that it gets SIGTERM when `parent_pid` (default: this process) dies."""
    return [python, "-m", "llmserve_stack.die_with_parent", str(os.getpid() if parent_pid is None else parent_pid),
            "--", *command]


def _request_death_signal(sig: signal.Signals) -> bool:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:  # not Linux: best effort, run without it
        return False
    return libc.prctl(_PR_SET_PDEATHSIG, int(sig)) == 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3 or args[1] != "--" or not args[0].isdigit():
        print("usage: python -m llmserve_stack.die_with_parent PARENT_PID -- COMMAND [ARG ...]", file=sys.stderr)
        return 2
    parent, command = int(args[0]), args[2:]
    _request_death_signal(signal.SIGTERM)
    # Checked after the request: a parent that died before it would never send the signal.
    if os.getppid() != parent:
        print(f"die_with_parent: parent {parent} is gone; not starting {command[0]}", file=sys.stderr)
        return PARENT_GONE_EXIT
    try:
        os.execvp(command[0], command)
    except OSError as err:
        print(f"die_with_parent: cannot run {command[0]}: {err}", file=sys.stderr)
        return 127
    return 0  # unreachable: execvp does not return


if __name__ == "__main__":
    sys.exit(main())
