"""Each service's core is pure: no grpc, asyncio or protobuf (and no torch outside the worker)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN_IN_CORE = {"grpc", "asyncio", "google.protobuf", "llmserve.v1", "llmserve.runtime"}
SHELL_MODULES = {"server.py", "worker_link.py"}
CORES = ["scheduler_svc/core", "kvstore_svc/core", "gateway/core", "worker_svc/core"]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("core", CORES)
def test_core_imports_no_wire_or_async_modules(core: str) -> None:
    folder = ROOT / core
    if not folder.is_dir():
        pytest.skip(f"{core} not present")
    offenders = []
    for path in folder.rglob("*.py"):
        for name in _imports(path):
            if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN_IN_CORE):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
            if core != "worker_svc/core" and (name == "torch" or name.startswith("torch.")):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_only_convert_modules_see_both_protobuf_and_core() -> None:
    offenders = []
    for service in ("gateway", "scheduler_svc", "worker_svc", "kvstore_svc"):
        folder = ROOT / service
        if not folder.is_dir():
            continue
        for path in folder.rglob("*.py"):
            if "core" in path.relative_to(folder).parts or path.name == "convert.py":
                continue
            names = _imports(path)
            sees_pb = any(n.startswith("llmserve.v1") for n in names)
            sees_core = any(n.startswith(f"{service}.core") for n in names)
            # The shells hand objects between the two worlds but convert only through convert.py.
            if sees_pb and sees_core and path.name not in SHELL_MODULES:
                offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, "modules other than convert.py/server.py mixing protobuf and core types: " + ", ".join(offenders)
