"""`llmserve up`'s restart budget: exponential backoff per service while its exits stay inside the
window, a give-up on the exit past `max_restarts`, and a fresh start once the window has passed."""

from __future__ import annotations

import pytest

from llmserve_stack.restarts import RestartBudget, RestartPolicy


def test_backoff_doubles_up_to_its_cap_then_gives_up() -> None:
    budget = RestartBudget(RestartPolicy(max_restarts=5, window_s=60.0, first_backoff_s=0.5, max_backoff_s=3.0))
    delays = [budget.on_exit(float(t)) for t in range(6)]
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0, None]
    assert budget.recent_exits == 6


def test_exits_outside_the_window_are_forgotten() -> None:
    budget = RestartBudget(RestartPolicy(max_restarts=2, window_s=10.0, first_backoff_s=1.0, max_backoff_s=8.0))
    assert budget.on_exit(0.0) == 1.0
    assert budget.on_exit(5.0) == 2.0
    assert budget.on_exit(10.5) == 2.0  # the exit at 0 left the window: two recent exits
    assert budget.on_exit(30.0) == 1.0  # up for longer than the window: from the first backoff again
    assert budget.on_exit(31.0) == 2.0
    assert budget.on_exit(32.0) is None


def test_no_restarts_gives_up_at_the_first_exit() -> None:
    assert RestartBudget(RestartPolicy(max_restarts=0)).on_exit(0.0) is None


@pytest.mark.parametrize("options", [{"max_restarts": -1}, {"window_s": 0.0},
                                     {"first_backoff_s": 2.0, "max_backoff_s": 1.0}])
def test_invalid_policies_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RestartPolicy(**options)  # type: ignore[arg-type]
