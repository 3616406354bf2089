"""Import arrows point down. Three floors:

    llmserve_stack/                         top: the CLI, launcher, supervisor, in-process engine, bench
    gateway/ scheduler_svc/ worker_svc/ kvstore_svc/   the services, side by side
    llmserve/                               ground: settings, runtime, stubs, model sources, errors

The ground imports no service; a service imports only the ground (and itself), except the one
declared lateral arrow: the simulator (`scheduler_svc.sim`) models the store with the store's own
core (`kvstore_svc.core`); the top may import anything; nothing but tests and benchmarks imports
the top (a script outside the packages may import the ground and the services). Every import counts: module level or inside a function, `import x`, `from x import y`,
relative, and `importlib.import_module("x")` / `__import__("x")` with a literal name. Every Python
file of the project outside tests/ and benchmarks/ is checked, generated stubs included.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GROUND = "llmserve"
SERVICES = ("gateway", "scheduler_svc", "worker_svc", "kvstore_svc")
TOP = "llmserve_stack"
# Each package, and the other first-party packages it may import.
MAY_IMPORT: dict[str, frozenset[str]] = {
    GROUND: frozenset(),
    **{service: frozenset({GROUND}) for service in SERVICES},
    TOP: frozenset({GROUND, *SERVICES}),
}
# (importing module or package, imported module or package) pairs allowed across services.
LATERAL = (("scheduler_svc.sim", "kvstore_svc.core"),)
# Folders whose files may import anything (the top included).
UNCHECKED = ("tests", "benchmarks")
# A Python file outside the packages (a build helper such as deploy/docker/requirements.py) is
# checked as a script: it may import the ground and the services, not the top.
SCRIPT = "(script)"
SCRIPT_MAY_IMPORT = frozenset({GROUND, *SERVICES})


def _packages() -> set[str]:
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    return {pattern.rstrip("*").rstrip(".") for pattern in include}


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str, root: Path) -> bool:
    path = root.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(path: Path, root: Path = ROOT) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import in the file at `path`."""
    module = _module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if package else []
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:
                # `from kvstore_svc import core` imports the module kvstore_svc.core.
                sub = f"{source}.{alias.name}"
                yield node.lineno, sub if _is_module(sub, root) else source
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                yield node.lineno, node.args[0].value


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def offending_imports(root: Path = ROOT, packages: set[str] | None = None) -> list[str]:
    """`file:line: import module` for each import that points up or sideways outside the map."""
    packages = packages if packages is not None else set(MAY_IMPORT)
    offenders = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if relative.parts[0] in UNCHECKED or any(part.startswith(".") for part in relative.parts):
            continue
        module = _module_name(path, root)
        own = module.split(".")[0] if module.split(".")[0] in packages else SCRIPT
        may_import = MAY_IMPORT[own] if own != SCRIPT else SCRIPT_MAY_IMPORT
        for line, imported in imports(path, root):
            target = imported.split(".")[0]
            if target not in packages or target == own or target in may_import:
                continue
            if any(_within(module, a) and _within(imported, b) for a, b in LATERAL):
                continue
            offenders.append(f"{relative}:{line}: import {imported}")
    return offenders


def test_the_map_names_every_package() -> None:
    assert _packages() == set(MAY_IMPORT)


def test_imports_point_down() -> None:
    offenders = offending_imports()
    assert not offenders, "imports that point up or sideways:\n" + "\n".join(offenders)


def test_the_check_sees_every_kind_of_import(tmp_path: Path) -> None:
    """It can fail: a ground module importing a service, a service importing another service or the
    top (at module level, in a function, relatively, by import_module) are all reported."""
    files = {
        "llmserve/__init__.py": "",
        "llmserve/ground.py": "from gateway import server\n",
        "gateway/__init__.py": "",
        "gateway/server.py": "import llmserve.ground\n\ndef f():\n    from llmserve_stack import cli\n",
        "scheduler_svc/__init__.py": "",
        "scheduler_svc/sim/__init__.py": "from kvstore_svc.core import pool\nfrom kvstore_svc import server\n",
        "scheduler_svc/core/__init__.py": "import importlib\nimportlib.import_module('worker_svc.model')\n",
        "kvstore_svc/__init__.py": "",
        "kvstore_svc/core/__init__.py": "from . import pool\nfrom ..server import x\n",
        "kvstore_svc/core/pool.py": "",
        "kvstore_svc/server.py": "",
        "worker_svc/__init__.py": "from llmserve_stack.engine import *\n",
        "worker_svc/model.py": "",
        "llmserve_stack/__init__.py": "import gateway.server, worker_svc.model\n",
        "llmserve_stack/cli.py": "",
        "tests/test_x.py": "import llmserve_stack.cli\n",
        "deploy/tool.py": "import gateway.server\nimport llmserve_stack.cli\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert offending_imports(tmp_path) == [
        "deploy/tool.py:2: import llmserve_stack.cli",
        "gateway/server.py:4: import llmserve_stack.cli",
        "llmserve/ground.py:1: import gateway.server",
        "scheduler_svc/core/__init__.py:2: import worker_svc.model",
        "scheduler_svc/sim/__init__.py:2: import kvstore_svc.server",
        "worker_svc/__init__.py:1: import llmserve_stack.engine",
    ]
