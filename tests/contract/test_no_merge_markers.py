"""No tracked file keeps a merge's conflict markers (a README with both sides of a merge still
renders, so nothing else would notice)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"^(<{7}|>{7})( |$)", re.M)


SKIPPED_DIRS = {".git", ".venv", "node_modules", "bench_out", ".cache", "__pycache__"}


def _source_files() -> list[str]:
    """The tracked files (git's list), or in a copy without git, every file outside build folders."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True)
    if listed.returncode == 0:
        return [n for n in listed.stdout.decode().split("\0") if n]
    return [str(p.relative_to(ROOT)) for p in ROOT.rglob("*")
            if p.is_file() and not SKIPPED_DIRS.intersection(p.relative_to(ROOT).parts)]


def test_no_tracked_file_has_conflict_markers() -> None:
    marked = []
    for name in _source_files():
        path = ROOT / name
        if not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if MARKER.search(text):
            marked.append(name)
    assert not marked, f"conflict markers left in: {marked}"
