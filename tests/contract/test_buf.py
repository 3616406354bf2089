"""The wire contract passes `buf lint` (protos/buf.yaml), breaks nothing of the public contract
as released with 0.1.0 (clients/released/v0.1.0: gateway.proto and common.proto), and the client
stubs under clients/ are what buf generates from the current protos."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
from pathlib import Path

from tests.clients import ROOT, npm_tool


def _buf(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([npm_tool("buf"), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_buf_lint() -> None:
    result = _buf("lint", "protos")
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_breaking_change_against_the_released_contract(tmp_path: Path) -> None:
    result = _buf("breaking", "protos", "--against", "clients/released/v0.1.0")
    assert result.returncode == 0, result.stdout + result.stderr
    # The check can fail: the released contract with one field's type changed is a break.
    changed = tmp_path / "released"
    shutil.copytree(ROOT / "clients" / "released" / "v0.1.0", changed)
    gateway = changed / "llmserve" / "v1" / "gateway.proto"
    gateway.write_text(gateway.read_text().replace("string tenant = 6;", "int32 tenant = 6;"))
    result = _buf("breaking", "protos", "--against", str(changed))
    assert result.returncode != 0 and 'changed type from "int32" to "string"' in result.stdout


def test_client_stubs_are_fresh(tmp_path: Path) -> None:
    template = (ROOT / "clients" / "buf.gen.yaml").read_text()
    npm_tool("protoc-gen-es")
    fresh = tmp_path / "clients"
    if shutil.which("protoc-gen-go") is None or shutil.which("protoc-gen-go-grpc") is None:
        template = template[: template.index("  - local: protoc-gen-go\n")]  # TypeScript only
    (tmp_path / "buf.gen.yaml").write_text(template.replace("out: clients/", f"out: {fresh}/").replace(
        "local: clients/typescript/node_modules", f"local: {ROOT}/clients/typescript/node_modules"))
    result = _buf("generate", "--template", str(tmp_path / "buf.gen.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    for generated in fresh.rglob("*"):
        if generated.is_file():
            committed = ROOT / "clients" / generated.relative_to(fresh)
            assert committed.exists() and filecmp.cmp(generated, committed, shallow=False), (
                f"{committed.relative_to(ROOT)} is stale: run bash clients/generate.sh")
    assert any(fresh.rglob("*_pb.ts"))
