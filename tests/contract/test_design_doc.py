"""docs/design.md names only what exists: every file or folder it names in backticks or links, and
every class and `Class.method` it names (in the Python tree or, for the wire, in the protos)."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "design.md"
PATH = re.compile(r"^[\w.-]+(/[\w.-]*)+$|^[\w-]+\.(py|md|proto|toml|yaml|sh)$")
CLASS_NAME = re.compile(r"^[A-Z][a-z]+[A-Z]\w*$|^[A-Z][a-z]+$")  # BatchPlan, Roster (not FCFS or RT)
ATTRIBUTE = re.compile(r"^([A-Z]\w*)\.(\w+)$")  # PlanBook.drop, Scheduler.Submit


def backticked(text: str) -> list[str]:
    return [*re.findall(r"`([^`\s]+)`", text), *re.findall(r"\]\(([^)#\s]+)", text)]


def missing_paths(text: str, doc: Path = DOC, root: Path = ROOT) -> list[str]:
    """Named files and folders that are neither under `root` nor beside `doc` (`../` leaves the
    repository: not checked). A bare file name (`convert.py`, each service's) must exist somewhere."""
    out = []
    for ref in backticked(text):
        if ref.startswith(("../", "http")) or "*" in ref or not PATH.match(ref):
            continue
        bare = "/" not in ref and any(root.rglob(ref))
        if not (bare or (root / ref).exists() or (doc.parent / ref).exists()):
            out.append(ref)
    return out


@cache
def python_names(root: Path = ROOT) -> dict[str, set[str]]:
    """Every class of the project's Python files, with its methods and class-level names."""
    names: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ClassDef):
                members = names.setdefault(node.name, set())
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        members.add(item.name)
                    elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                        members.add(item.target.id)
                    elif isinstance(item, ast.Assign):
                        members.update(t.id for t in item.targets if isinstance(t, ast.Name))
            elif isinstance(node, ast.Assign):  # aliases: NewRequestData = NewRequest
                names.update({t.id: set() for t in node.targets if isinstance(t, ast.Name) and t.id not in names})
    return names


@cache
def proto_names(root: Path = ROOT) -> dict[str, str]:
    """Every message, service, enum and RPC of the protos, with the text of its block."""
    out = {}
    for path in (root / "protos").rglob("*.proto"):
        text = path.read_text()
        for match in re.finditer(r"^\s*(?:message|service|enum)\s+(\w+)\s*\{", text, re.M):
            out[match.group(1)] = text[match.end(): text.find("\n}", match.end())]
        out.update({rpc: "" for rpc in re.findall(r"^\s*rpc\s+(\w+)", text, re.M)})
    return out


def missing_names(text: str) -> list[str]:
    py, wire = python_names(), proto_names()
    out = []
    for ref in backticked(text):
        if attribute := ATTRIBUTE.match(ref):
            owner, member = attribute.groups()
            if member in py.get(owner, ()) or re.search(rf"\b{member}\b", wire.get(owner, "")):
                continue
            out.append(ref)
        elif CLASS_NAME.match(ref) and ref not in py and ref not in wire:
            out.append(ref)
    return out


def test_every_file_the_design_names_exists() -> None:
    missing = missing_paths(DOC.read_text())
    assert not missing, f"docs/design.md names files that do not exist: {missing}"


def test_every_class_and_method_the_design_names_exists() -> None:
    missing = missing_names(DOC.read_text())
    assert not missing, f"docs/design.md names classes or methods that do not exist: {missing}"


def test_the_checks_can_fail(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "real.py").write_text("")
    (tmp_path / "docs" / "other.md").write_text("")
    text = "`svc/real.py` `real.py` `svc/loop.py` `loop.py` [x](other.md) [y](gone.md) `../shared/A.md` `--flag`"
    assert missing_paths(text, tmp_path / "docs" / "design.md", tmp_path) == ["svc/loop.py", "loop.py", "gone.md"]
    assert missing_names("`PlanBook.drop` `PlanBook.vanish` `NoSuchBook` `Scheduler.Submit` `RT`") == [
        "PlanBook.vanish", "NoSuchBook"]
