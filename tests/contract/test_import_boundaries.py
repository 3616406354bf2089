"""The import boundaries the architecture states, read from every module of the four services.

- Each service's `core/` is pure: no grpc, asyncio, protobuf or `llmserve.runtime` (and no torch
  outside the worker), not even for type hints.
- Only `convert.py` sees both protobuf messages and core types. Any other module that imports a
  service's core (a shell: `server.py`, `worker_link.py`, ...) may import the generated
  `*_pb2_grpc` modules (servicer bases, stubs) and hand messages to `convert`, but imports no
  `*_pb2` message module at run time: it names message types in annotations only (imported under
  `if TYPE_CHECKING:`), so it can neither build a message nor test its class, and it reads no
  field of a message it is handed as a parameter.

A module that does not parse, or whose imports cannot be resolved statically (a relative import
that leaves the tree, `import *`, a dynamic import of a computed name), fails: nothing is skipped.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("gateway", "scheduler_svc", "worker_svc", "kvstore_svc")
CORES = [f"{service}/core" for service in SERVICES]
FORBIDDEN_IN_CORE = ("grpc", "asyncio", "google.protobuf", "llmserve.v1", "llmserve.runtime")
STUB_PACKAGE = "llmserve.v1"


@dataclass
class Module:
    """What one source file imports, as absolute module names."""

    name: str
    tree: ast.Module
    runtime: set[str] = field(default_factory=set)
    type_only: set[str] = field(default_factory=set)  # imported under `if TYPE_CHECKING:`
    type_only_names: dict[str, str] = field(default_factory=dict)  # local name -> module
    unresolved: list[str] = field(default_factory=list)
    future_annotations: bool = False


def _is_module(dotted: str, root: Path) -> bool:
    path = root.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _type_checking_blocks(tree: ast.Module) -> list[ast.If]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node.test)]


def read_module(source: str, name: str, is_package: bool = False, root: Path = ROOT) -> Module:
    """Parses `source` (module `name`) and resolves its imports (raises SyntaxError)."""
    tree = ast.parse(source)
    module = Module(name, tree)
    type_only_nodes = {id(n) for block in _type_checking_blocks(tree) for stmt in block.body for n in ast.walk(stmt)}
    package = name if is_package else name.rpartition(".")[0]
    repo_modules: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "." in node.value:
            if node.value.replace(".", "").replace("_", "").isalnum() and _is_module(node.value, root):
                repo_modules.append(node.value)
    for node in ast.walk(tree):
        found: list[tuple[str, str]] = []  # (module, local name bound)
        if isinstance(node, ast.Import):
            found = [(alias.name, alias.asname or alias.name.partition(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".") if package else []
                if node.level - 1 > len(parts) - 1:
                    module.unresolved.append(f"line {node.lineno}: relative import beyond the top package")
                    continue
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                origin = f"{base}.{node.module}" if node.module else base
            else:
                origin = node.module or ""
            if origin == "__future__":
                module.future_annotations |= any(alias.name == "annotations" for alias in node.names)
                continue
            for alias in node.names:
                if alias.name == "*":
                    module.unresolved.append(f"line {node.lineno}: from {origin} import *")
                    continue
                candidate = f"{origin}.{alias.name}"
                found.append((candidate if _is_module(candidate, root) else origin, alias.asname or alias.name))
        elif isinstance(node, ast.Call):
            func = node.func
            callee = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if callee in ("import_module", "__import__"):
                arg = node.args[0] if node.args else None
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    module.runtime.add(arg.value)
                elif repo_modules:  # a registry of literal module names: those are what it imports
                    module.runtime.update(repo_modules)
                else:
                    module.unresolved.append(f"line {node.lineno}: dynamic import of a computed name")
            continue
        for imported, local in found:
            if imported == STUB_PACKAGE:
                module.unresolved.append(f"line {node.lineno}: imports the {STUB_PACKAGE} package itself")
            elif id(node) in type_only_nodes:
                module.type_only.add(imported)
                module.type_only_names[local] = imported
            else:
                module.runtime.add(imported)
    return module


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def is_message_module(name: str) -> bool:
    return name.rpartition(".")[2].endswith("_pb2")


def is_core_module(name: str) -> bool:
    return any(_within(name, f"{service}.core") for service in SERVICES)


def core_offences(module: Module, worker: bool) -> list[str]:
    offences = []
    for name in sorted(module.runtime | module.type_only):
        if any(_within(name, bad) for bad in FORBIDDEN_IN_CORE) or (not worker and _within(name, "torch")):
            offences.append(f"imports {name}")
    return offences


def _annotation_nodes(tree: ast.Module) -> set[int]:
    """Ids of every node inside an annotation or a TYPE_CHECKING block."""
    roots: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            roots += [arg.annotation for arg in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg)
                      if arg is not None and arg.annotation is not None]
            if node.returns is not None:
                roots.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            roots.append(node.annotation)
    roots += [stmt for block in _type_checking_blocks(tree) for stmt in block.body]
    return {id(n) for root in roots for n in ast.walk(root)}


def _message_parameters(function: ast.FunctionDef | ast.AsyncFunctionDef, message_names: set[str]) -> set[str]:
    """Parameters annotated with a message class itself (`x: worker_pb2.BatchPlan`)."""
    a = function.args
    names = set()
    for arg in (*a.posonlyargs, *a.args, *a.kwonlyargs):
        ann = arg.annotation
        if isinstance(ann, ast.Attribute) and isinstance(ann.value, ast.Name) and ann.value.id in message_names:
            names.add(arg.arg)
    return names


def shell_offences(module: Module) -> list[str]:
    """Why a module that is neither a core module nor convert.py breaks the boundary (none when
    it does not import a core)."""
    if not any(is_core_module(name) for name in module.runtime | module.type_only):
        return []
    offences = [f"imports {name} at run time" for name in sorted(module.runtime) if is_message_module(name)]
    message_names = {local for local, name in module.type_only_names.items() if is_message_module(name)}
    if message_names and not module.future_annotations:
        offences.append("names message types in annotations without `from __future__ import annotations`")
    allowed = _annotation_nodes(module.tree)
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Name) and node.id in message_names and id(node) not in allowed:
            offences.append(f"line {node.lineno}: uses {node.id} outside an annotation")
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            params = _message_parameters(node, message_names)
            for inner in ast.walk(node):
                if isinstance(inner, ast.Attribute) and isinstance(inner.value, ast.Name) and inner.value.id in params:
                    offences.append(f"line {inner.lineno}: reads {inner.value.id}.{inner.attr} (read it in convert.py)")
    return offences


def _service_files() -> list[Path]:
    return sorted(path for service in SERVICES for path in (ROOT / service).rglob("*.py"))


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _read_file(path: Path) -> Module:
    return read_module(path.read_text(), _module_name(path), is_package=path.name == "__init__.py")


# ---- the tree -------------------------------------------------------------------------------------
@pytest.mark.parametrize("folder", [*SERVICES, *CORES])
def test_every_service_and_its_core_are_present(folder: str) -> None:
    assert (ROOT / folder / "__init__.py").is_file(), f"{folder} is missing: the boundaries cannot be checked"


def test_every_service_module_parses_and_its_imports_resolve() -> None:
    problems = []
    for path in _service_files():
        try:
            module = _read_file(path)
        except (SyntaxError, UnicodeDecodeError, ValueError) as err:
            problems.append(f"{path.relative_to(ROOT)}: cannot be read ({err})")
            continue
        problems += [f"{path.relative_to(ROOT)}: {why}" for why in module.unresolved]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("core", CORES)
def test_core_imports_no_wire_or_async_modules(core: str) -> None:
    paths = sorted((ROOT / core).rglob("*.py"))
    assert paths, f"{core} holds no module"
    offenders = [f"{p.relative_to(ROOT)} {why}" for p in paths for why in core_offences(_read_file(p), core == "worker_svc/core")]
    assert not offenders, "\n".join(offenders)


def test_only_convert_modules_see_both_protobuf_messages_and_core_types() -> None:
    offenders = []
    for path in _service_files():
        parts = path.relative_to(ROOT).parts
        if "core" in parts[1:] or path.name == "convert.py":
            continue
        offenders += [f"{path.relative_to(ROOT)}: {why}" for why in shell_offences(_read_file(path))]
    assert not offenders, "move message construction and reading into the service's convert.py:\n" + "\n".join(offenders)


# ---- the checker itself: each rule catches what it states -------------------------------------------
def _shell(source: str, name: str = "worker_svc.server") -> list[str]:
    return shell_offences(read_module(textwrap.dedent(source), name))


def test_checker_flags_a_shell_that_imports_messages_and_core_at_run_time() -> None:
    assert _shell("""
        from llmserve.v1 import worker_pb2, worker_pb2_grpc
        from worker_svc.core.types import BatchPlan
    """) == ["imports llmserve.v1.worker_pb2 at run time"]
    # A relative import of the core counts as the core; stubs and convert alone are fine.
    assert _shell("from llmserve.v1 import worker_pb2\nfrom .core import types\n")
    assert _shell("from __future__ import annotations\nfrom llmserve.v1 import worker_pb2_grpc\nfrom worker_svc import convert\n"
                  "from worker_svc.core.types import BatchPlan\n") == []
    # A module that sees no core may use messages (clients of other services).
    assert _shell("from llmserve.v1 import kvstore_pb2\nx = kvstore_pb2.ApplyRequest()\n") == []


def test_checker_lets_shells_name_messages_in_annotations_only() -> None:
    ok = """
        from __future__ import annotations
        from typing import TYPE_CHECKING
        from worker_svc import convert
        from worker_svc.core.types import BatchPlan
        if TYPE_CHECKING:
            from llmserve.v1 import worker_pb2
            Alias = list[worker_pb2.BatchPlan]

        async def Execute(self, plans: Alias, context: object) -> worker_pb2.StepResult:
            queue: list[worker_pb2.BatchPlan] = []
            return convert.step(plans)
    """
    assert _shell(ok) == []
    built = ok.replace("return convert.step(plans)", "return worker_pb2.StepResult(step_id=1)")
    assert _shell(built) == ["line 12: uses worker_pb2 outside an annotation"]
    assert _shell(ok.replace("from __future__ import annotations", "import typing")) == [
        "names message types in annotations without `from __future__ import annotations`"]


def test_checker_flags_a_shell_reading_a_message_parameter() -> None:
    source = """
        from __future__ import annotations
        from typing import TYPE_CHECKING
        from worker_svc.core.types import BatchPlan
        if TYPE_CHECKING:
            from llmserve.v1 import worker_pb2

        def run(plan_pb: worker_pb2.BatchPlan) -> int:
            return plan_pb.step_id
    """
    assert _shell(source) == ["line 9: reads plan_pb.step_id (read it in convert.py)"]


def test_checker_flags_what_it_cannot_resolve() -> None:
    assert read_module("from llmserve import v1\n", "gateway.server").unresolved
    assert read_module("from llmserve.v1 import *\n", "gateway.server").unresolved
    assert read_module("import importlib\nimportlib.import_module(name)\n", "gateway.server").unresolved
    assert read_module("from ... import x\n", "gateway.server").unresolved
    # A registry of literal module names resolves to those modules (the policy factory).
    registry = read_module("import importlib\nM = ('scheduler_svc.core.policy.fcfs',)\nimportlib.import_module(M[0])\n",
                           "scheduler_svc.core.policy", is_package=True)
    assert not registry.unresolved and "scheduler_svc.core.policy.fcfs" in registry.runtime


def test_checker_flags_wire_imports_in_a_core_even_for_type_hints() -> None:
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import grpc\nfrom .. import convert\n"
    module = read_module(source, "kvstore_svc.core.store")
    assert core_offences(module, worker=False) == ["imports grpc"]
    assert "kvstore_svc.convert" in module.runtime
    assert core_offences(read_module("import torch\n", "kvstore_svc.core.x"), worker=False) == ["imports torch"]
    assert core_offences(read_module("import torch\n", "worker_svc.core.x"), worker=True) == []
