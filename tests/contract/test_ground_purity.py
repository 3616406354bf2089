"""The ground floor's shared vocabulary is pure: `llmserve/types.py`, `plan.py`, `errors.py`,
`plan_book/`, `settings/` and `prefix/` import only the standard library and each other, so that every layer
(cores included) can use them without grpc, protobuf, torch or a service coming along."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.contract.test_layers import ROOT, imports

PURE = ("llmserve.types", "llmserve.plan", "llmserve.errors", "llmserve.plan_book", "llmserve.settings",
        "llmserve.prefix")


def _pure_files(root: Path = ROOT) -> list[Path]:
    files = []
    for name in PURE:
        path = root.joinpath(*name.split("."))
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]
    return files


def impure_imports(root: Path = ROOT) -> list[str]:
    """`file:line: import module` for each import of a pure module that is neither stdlib nor pure."""
    out = []
    for path in _pure_files(root):
        for line, imported in imports(path, root):
            top = imported.split(".")[0]
            if top in sys.stdlib_module_names or top == "__future__":
                continue
            if any(imported == p or imported.startswith(p + ".") for p in PURE):
                continue
            out.append(f"{path.relative_to(root)}:{line}: import {imported}")
    return out


def test_every_pure_module_is_there() -> None:
    assert all(path.is_file() for path in _pure_files()), _pure_files()


def test_the_shared_vocabulary_imports_only_the_stdlib_and_itself() -> None:
    offenders = impure_imports()
    assert not offenders, "the ground's pure modules import:\n" + "\n".join(offenders)


def test_the_check_can_fail(tmp_path: Path) -> None:
    (tmp_path / "llmserve" / "plan_book").mkdir(parents=True)
    (tmp_path / "llmserve" / "settings").mkdir()
    (tmp_path / "llmserve" / "prefix").mkdir()
    (tmp_path / "llmserve" / "prefix" / "index.py").write_text("import collections\n")
    for name in ("types", "errors"):
        (tmp_path / "llmserve" / f"{name}.py").write_text("import enum\n")
    (tmp_path / "llmserve" / "plan.py").write_text("from llmserve.types import X\nimport grpc\n")
    (tmp_path / "llmserve" / "plan_book" / "book.py").write_text("from llmserve.runtime import errors\n")
    (tmp_path / "llmserve" / "settings" / "__init__.py").write_text("")
    assert impure_imports(tmp_path) == ["llmserve/plan.py:2: import grpc",
                                        "llmserve/plan_book/book.py:1: import llmserve.runtime"]
