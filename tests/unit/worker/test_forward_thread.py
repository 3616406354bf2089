"""The worker's one torch thread (worker_svc/forward_thread.py) and its OpenMP settings
(worker_svc/openmp.py)."""

from __future__ import annotations

import ast
import contextvars
import importlib.util
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from worker_svc.forward_thread import ForwardThread
from worker_svc.openmp import OPENMP_DEFAULTS, set_openmp_defaults

_current = contextvars.ContextVar("current", default="unset")


async def test_every_call_runs_on_the_same_thread_not_the_loops() -> None:
    thread = ForwardThread()
    try:
        idents = {await thread.run(threading.get_ident) for _ in range(20)}
    finally:
        thread.close()
    assert len(idents) == 1
    assert idents != {threading.get_ident()}


async def test_the_callers_context_variables_are_seen_on_the_thread() -> None:
    thread = ForwardThread()
    _current.set("step 7")
    try:
        assert await thread.run(_current.get) == "step 7"
    finally:
        thread.close()


async def test_an_exception_reaches_the_caller_and_the_thread_serves_on() -> None:
    thread = ForwardThread()

    def fail() -> None:
        raise ValueError("forward failed")

    try:
        with pytest.raises(ValueError, match="forward failed"):
            await thread.run(fail)
        assert await thread.run(lambda: 42) == 42
    finally:
        thread.close()


async def test_a_closed_thread_takes_no_more_calls() -> None:
    thread = ForwardThread()
    thread.close()
    with pytest.raises(RuntimeError):
        await thread.run(lambda: None)


def test_openmp_defaults_fill_in_what_the_environment_does_not_set() -> None:
    environ = {"OMP_WAIT_POLICY": "ACTIVE"}
    set_openmp_defaults(environ)
    assert environ == {**OPENMP_DEFAULTS, "OMP_WAIT_POLICY": "ACTIVE"}


def test_the_worker_sets_them_before_anything_can_load_torch() -> None:
    """In `python -m worker_svc` nothing but `os` and the settings' module is imported before
    the settings are applied (libgomp reads them once, when torch loads it)."""
    main = importlib.util.find_spec("worker_svc.__main__")  # found, not run: it would set this process's environment
    assert main is not None and main.origin is not None
    tree = ast.parse(Path(main.origin).read_text())
    before = []
    for node in tree.body:
        if isinstance(node, ast.Expr) and "set_openmp_defaults" in ast.unparse(node):
            break
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            before.append(ast.unparse(node))
    else:
        pytest.fail("worker_svc/__main__.py does not call set_openmp_defaults")
    assert before == ["from __future__ import annotations", "import os",
                      "from worker_svc.openmp import set_openmp_defaults"]


def test_the_settings_module_loads_no_torch() -> None:
    code = ("import os, sys; import worker_svc.openmp as m; assert 'torch' not in sys.modules; "
            "m.set_openmp_defaults(os.environ); print(os.environ['GOMP_SPINCOUNT'])")
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == OPENMP_DEFAULTS["GOMP_SPINCOUNT"]


async def test_submit_hands_the_call_to_the_thread_before_the_caller_yields() -> None:
    """The worker's step hands its work over with `submit`: the thread starts on it while the event
    loop is still busy with the caller (the loop would otherwise first run every ready callback, such
    as gRPC's write of the previous result), and the returned future is awaited as `run`'s."""
    thread = ForwardThread()
    began = threading.Event()
    try:
        future = thread.submit(lambda: (began.set(), threading.get_ident())[1])
        assert began.wait(timeout=10), "the call had not begun while the loop was still the caller's"
        assert await future != threading.get_ident()
    finally:
        thread.close()
