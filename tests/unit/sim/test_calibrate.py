"""The cost-model fit recovers known coefficients; the CLI reads StepTiming JSONL."""

from __future__ import annotations

import json
import random

import pytest

from scheduler_svc.sim import calibrate
from scheduler_svc.sim.cost_model import CostModel, load_cost_model

TRUE = CostModel(0.004, 2.5e-5, 1.2e-4, 3.0e-8, name="truth")


def _rows(n: int, noise: float, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prefill = rng.choice([0, 0, rng.randint(1, 2048)])
        decode = rng.randint(0 if prefill else 1, 64)
        kv = decode * rng.randint(16, 4096) + prefill * rng.randint(1, 2)
        t = TRUE.step_time(prefill, decode, kv) * (1 + rng.gauss(0, noise))
        rows.append({"forward_ns": int(t * 0.9e9), "sample_ns": int(t * 0.05e9), "kv_ns": 0, "total_ns": int(t * 1e9),
                     "num_prefill_tokens": prefill, "num_decode_seqs": decode, "num_kv_tokens_read": kv})
    return rows


def test_fit_recovers_known_coefficients_exactly_without_noise():
    model = calibrate.fit(calibrate.rows_from_dicts(_rows(200, 0.0)))
    assert model.a_s == pytest.approx(TRUE.a_s, rel=1e-3)
    assert model.b_s_per_prefill_token == pytest.approx(TRUE.b_s_per_prefill_token, rel=1e-3)
    assert model.c_s_per_decode_seq == pytest.approx(TRUE.c_s_per_decode_seq, rel=1e-3)
    assert model.d_s_per_kv_token == pytest.approx(TRUE.d_s_per_kv_token, rel=1e-3)
    assert model.extra["fit_r2"] == pytest.approx(1.0)


def test_fit_is_close_under_noise_and_never_negative():
    model = calibrate.fit(calibrate.rows_from_dicts(_rows(2000, 0.05, seed=1)))
    assert model.b_s_per_prefill_token == pytest.approx(TRUE.b_s_per_prefill_token, rel=0.05)
    assert model.c_s_per_decode_seq == pytest.approx(TRUE.c_s_per_decode_seq, rel=0.15)
    # A feature that does not matter (times independent of kv) must fit to >= 0, not negative.
    rows = [{**r, "total_ns": int(TRUE.step_time(r["num_prefill_tokens"], r["num_decode_seqs"], 0) * 1e9)}
            for r in _rows(300, 0.0, seed=2)]
    flat = calibrate.fit(calibrate.rows_from_dicts(rows))
    assert flat.d_s_per_kv_token >= 0 and flat.d_s_per_kv_token < 1e-10


def test_too_few_rows_is_an_error():
    with pytest.raises(ValueError, match="at least 4"):
        calibrate.fit(calibrate.rows_from_dicts(_rows(3, 0.0)))


def test_cli_fits_a_timings_file(tmp_path, capsys):
    src = tmp_path / "steps.jsonl"
    rows = _rows(100, 0.0)
    rows.append({"total_ns": 5, "num_prefill_tokens": 0, "num_decode_seqs": 0, "num_kv_tokens_read": 0})  # idle: skipped
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "cost.json"
    assert calibrate.main(["--from-timings", str(src), "--out", str(out), "--name", "cpu-test"]) == 0
    model = load_cost_model(out)
    assert model.name == "cpu-test" and model.extra["fit_rows"] == 100
    assert model.c_s_per_decode_seq == pytest.approx(TRUE.c_s_per_decode_seq, rel=1e-3)
    assert str(src) in model.extra["source"]


def test_bundled_gpu_profile_loads_and_states_its_source():
    model = load_cost_model("h100_llama3_8b")
    assert "roofline" in model.extra["source"].lower()
    # A 64-sequence decode step at 2k context each: tens of milliseconds, not seconds.
    assert 0.008 < model.step_time(0, 64, 64 * 2048) < 0.05
    with pytest.raises(FileNotFoundError, match="bundled profile"):
        load_cost_model("no_such_profile")
