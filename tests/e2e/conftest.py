"""Fixtures that start the four services as separate processes (`llmserve_stack.supervisor.Stack`)."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(autouse=True)
def _no_start_up_calibration(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stacks' workers skip their start-up calibration (seconds per start and per restart);
    the fault tests time restarts, and no e2e test reads the cost model. Children inherit it."""
    monkeypatch.setenv("LLMSERVE_CALIBRATE", "0")
