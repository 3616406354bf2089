"""Undecodable requests are logged as one warning line per interval, with the count of those not
logged, never one line (or traceback) per call."""

from __future__ import annotations

import pytest

from llmserve.runtime.errors import DecodeFailures


def test_one_line_per_interval_with_the_suppressed_count(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    failures = DecodeFailures(interval_s=60.0, clock=lambda: now[0])
    with caplog.at_level("WARNING"):
        for t in (0.0, 1.0, 2.0, 59.0, 61.0, 62.0):
            now[0] = t
            failures.record("/llmserve.v1.Gateway/Generate", "Wire format was corrupt")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert "more since" not in lines[0] and "(3 more since the last warning)" in lines[1]
