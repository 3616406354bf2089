"""Reads what a module imports, statically, and says where it breaks the import boundaries that
`test_import_boundaries.py` states (the rules are in its docstring; the checker's own tests are
`test_import_checker.py`).

A module that does not parse, or whose imports cannot be resolved statically (a relative import
that leaves the tree, `import *`, a dynamic import of a computed name), is reported unresolved.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

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


def service_files() -> list[Path]:
    return sorted(path for service in SERVICES for path in (ROOT / service).rglob("*.py"))


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def read_file(path: Path) -> Module:
    return read_module(path.read_text(), _module_name(path), is_package=path.name == "__init__.py")
