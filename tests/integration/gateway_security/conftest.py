"""One in-process backend (kvstore, worker, scheduler on 127.0.0.1:0) for the whole package, and
a gateway over it with API keys on (two tenants, one key stored hashed) and a concurrency quota."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from llmserve.runtime.server import ServiceServer
from tests.integration.gateway_security.calls import KEY_A, KEY_B
from tests.integration.inprocess import Backend, running_backend


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def backend() -> AsyncIterator[Backend]:
    async with running_backend() as started:
        yield started


@pytest.fixture(scope="package")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "api_keys"
    digest_b = hashlib.sha256(KEY_B.encode()).hexdigest()
    path.write_text(f"# tenant key\ntenant-a {KEY_A}\ntenant-b sha256:{digest_b}  # hashed\n")
    return path


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def secured(backend: Backend, keys_file: Path) -> ServiceServer:
    return await backend.gateway(api_keys_file=str(keys_file), tenant_max_concurrent_requests=2)
