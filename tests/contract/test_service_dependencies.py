"""The gateway, kvstore and scheduler images carry no torch, triton or matplotlib (pyproject's
`gateway`/`kvstore`/`scheduler` extras): each service imports, and does what its start needs, in a
process where those packages are as if not installed (importing one raises ModuleNotFoundError,
and a probe such as transformers' `is_torch_available()` finds nothing). The kvstore has no
transformers either. The worker, which needs torch, is the control: the same harness fails it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "triton", "matplotlib")

HARNESS = """
import sys
BLOCKED = {blocked!r}
for name in BLOCKED:
    sys.modules[name] = None  # as if not installed: `import name` raises ModuleNotFoundError
{body}
loaded = sorted(name for name in sys.modules if name.split(".")[0] in BLOCKED and sys.modules[name] is not None)
assert not loaded, loaded
print("ok")
"""

CASES = {
    "kvstore": (HEAVY + ("transformers",), """
        import asyncio
        import kvstore_svc.__main__
        from kvstore_svc.config import KvStoreConfig
        from kvstore_svc.server import start_kvstore

        async def main():
            running = await start_kvstore(KvStoreConfig(), "127.0.0.1:0")
            await running.stop(0)

        asyncio.run(main())
    """),
    "gateway": (HEAVY, """
        import gateway.__main__
        import gateway.server
        from llmserve.model_source import load_tokenizer, resolve_model

        # What the gateway's start loads: the bundled GGUF's tokenizer and chat template.
        tokenizer = load_tokenizer(resolve_model("default"))
        assert tokenizer.encode("Hello") and tokenizer.chat_template
        tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    """),
    "scheduler": (HEAVY, """
        import scheduler_svc.__main__
        import scheduler_svc.server
        from scheduler_svc.core.policy import POLICY_NAMES, make_policy

        for name in POLICY_NAMES:  # what a start builds for each worker
            make_policy(name)
    """),
}


def _run(blocked: tuple[str, ...], body: str) -> subprocess.CompletedProcess[str]:
    script = HARNESS.format(blocked=blocked, body=textwrap.dedent(body))
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("service", CASES)
def test_service_needs_no_heavy_packages(service: str) -> None:
    blocked, body = CASES[service]
    result = _run(blocked, body)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_the_harness_fails_a_service_that_needs_torch() -> None:
    result = _run(HEAVY, "import worker_svc.server")
    assert result.returncode != 0 and "ModuleNotFoundError" in result.stderr and "torch" in result.stderr


@pytest.mark.parametrize("load_format", ["gguf", "dummy"])
def test_the_worker_loads_the_bundled_gguf_without_transformers(load_format: str) -> None:
    """A worker's start reads a GGUF's config and weights itself (issue 11: importing transformers
    and its GGUF parsing were most of a restart), so none of it may reach for transformers."""
    result = _run(("transformers",), f"""
        import worker_svc.__main__
        from llmserve.model_source import resolve_model
        from worker_svc.kernels.backend import make_backend
        from worker_svc.model.loader import load_model

        model = load_model(resolve_model("default", {load_format!r}), make_backend("torch"))
        assert model.config.num_layers == 30
        # Nor torch's compiler stack: building the model on the meta device once imported
        # torch._dynamo (nn.Embedding's init) and sympy (to_empty), 2-3 s of a start.
        lazy = [name for name in ("torch._dynamo", "sympy") if name in sys.modules]
        assert not lazy, lazy
    """)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
