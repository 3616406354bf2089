"""No process of the stack forks: every service runs gRPC threads, and fork() in such a process
runs gRPC's fork handlers, which crash or abort the child (llmserve_stack/die_with_parent.py has
the measurements). So no `preexec_fn` (it makes subprocess fork instead of vfork), no `os.fork`,
no multiprocessing with the fork start method, in any module of the project."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("llmserve", "llmserve_stack", "gateway", "scheduler_svc", "worker_svc", "kvstore_svc")


def _forks(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "preexec_fn":
            found.append(f"line {node.value.lineno}: preexec_fn=")
        elif isinstance(node, ast.Attribute) and node.attr in ("fork", "forkpty") and \
                isinstance(node.value, ast.Name) and node.value.id == "os":
            found.append(f"line {node.lineno}: os.{node.attr}")
        elif isinstance(node, ast.Constant) and node.value == "fork" and \
                isinstance(getattr(node, "parent", None), ast.Call):
            found.append(f"line {node.lineno}: a 'fork' start method")
    return found


def _tree(source: str) -> ast.AST:
    tree = ast.parse(source)
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            child.parent = node  # type: ignore[attr-defined]
    return tree


def test_no_module_forks() -> None:
    offenders = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found = _forks(_tree(path.read_text()))
            if found:
                offenders[str(path.relative_to(ROOT))] = found
    assert offenders == {}


def test_the_check_finds_a_fork() -> None:
    source = "import os, subprocess, multiprocessing\n" \
             "subprocess.Popen(['x'], preexec_fn=f)\nos.fork()\nmultiprocessing.get_context('fork')\n"
    assert _forks(_tree(source)) == ["line 2: preexec_fn=", "line 3: os.fork", "line 4: a 'fork' start method"]
