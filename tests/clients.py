"""Where the tests find the other languages' tools: the npm packages of clients/typescript (buf,
protoc-gen-es, tsx; installed with `npm ci` on first use where npm exists) and a Go toolchain."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TS = ROOT / "clients" / "typescript"
GO = ROOT / "clients" / "go"
GO_IMPORT_PATH = "llmserve.dev/clients/go"
DEBIAN_GOCODE = Path("/usr/share/gocode")
GO_PACKAGES = ("golang-go golang-google-grpc-dev golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev "
               "protoc-gen-go protoc-gen-go-grpc")


def npm_tool(name: str) -> str:
    """clients/typescript/node_modules/.bin/NAME, after `npm ci` there if needed; skips (saying
    why) only where node or npm is truly absent."""
    binary = TS / "node_modules" / ".bin" / name
    if not binary.exists():
        if shutil.which("node") is None or shutil.which("npm") is None:
            pytest.skip("node/npm are not installed: the TypeScript client and buf need them")
        result = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=TS, capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, result.stdout + result.stderr
    assert binary.exists(), f"npm ci did not install {name}"
    return str(binary)


def go_build(target: str, out: Path, work: Path) -> None:
    """Builds package `target` of clients/go into `out`. With Debian's Go packages (GO_PACKAGES;
    grpc-go marshals through github.com/golang/protobuf, which must be 1.4 or later for these
    stubs, hence its 1-5 package) it builds offline in GOPATH mode against /usr/share/gocode;
    skips where no Go toolchain is installed."""
    go = shutil.which("go")
    if go is None:
        pytest.skip(f"no Go toolchain (apt-get install {GO_PACKAGES})")
    if not (DEBIAN_GOCODE / "src" / "google.golang.org" / "grpc").exists():
        pytest.skip(f"Go is installed but not grpc-go (apt-get install {GO_PACKAGES})")
    if (DEBIAN_GOCODE / "src" / "github.com" / "golang" / "protobuf" / "proto" / "table_marshal.go").exists():
        pytest.fail("github.com/golang/protobuf is 1.3 (it cannot marshal these stubs): "
                    "apt-get install golang-github-golang-protobuf-1-5-dev")
    source = work / "src" / GO_IMPORT_PATH
    source.parent.mkdir(parents=True, exist_ok=True)
    source.symlink_to(GO)
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": f"{work}:{DEBIAN_GOCODE}", "GOCACHE": str(work / "cache"),
           "GOFLAGS": ""}
    result = subprocess.run([go, "build", "-o", str(out), f"{GO_IMPORT_PATH}/{target}"], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
