"""Where bros's and tempo's cost model starts: the --cost-model file, else the worker's start-up
calibration (Describe's step_cost), else the built-in defaults."""

from __future__ import annotations

import pytest

from llmserve.v1 import worker_pb2
from scheduler_svc.config import SchedulerServiceConfig
from scheduler_svc.core.cost_model import LinearCostModel
from scheduler_svc.core.policy import make_policy
from scheduler_svc.policy_options import policy_options

CALIBRATED = worker_pb2.StepCostModel(a_s=0.03, b_s_per_prefill_token=4e-4, c_s_per_decode_seq=6e-4,
                                      d_s_per_kv_token=2e-7, num_samples=12, r2=0.98)


def _info(calibrated: bool = True) -> worker_pb2.WorkerInfo:
    info = worker_pb2.WorkerInfo(worker_id="w0", vocab_size=96, max_model_len=256, block_size=16, num_blocks=64)
    if calibrated:
        info.step_cost.CopyFrom(CALIBRATED)
    return info


@pytest.mark.parametrize("policy", ["bros", "tempo"])
def test_the_workers_calibration_is_the_prior_when_no_file_is_given(policy) -> None:
    options = policy_options(SchedulerServiceConfig(worker_addrs=("w:1",), policy=policy), _info())
    assert options["cost_model"] == LinearCostModel(0.03, 4e-4, 6e-4, 2e-7)
    built = make_policy(policy, **options)
    assert built.online_cost is not None and built.online_cost.prior == LinearCostModel(0.03, 4e-4, 6e-4, 2e-7)


def test_a_cost_model_file_wins_over_the_calibration(tmp_path) -> None:
    path = tmp_path / "cost.json"
    path.write_text('{"a_s": 0.1, "b_s_per_prefill_token": 0, "c_s_per_decode_seq": 0, "d_s_per_kv_token": 0}')
    options = policy_options(SchedulerServiceConfig(worker_addrs=("w:1",), policy="bros", cost_model=str(path)), _info())
    assert options == {"cost_model_path": str(path)}


def test_without_a_calibration_or_a_cost_aware_policy_nothing_is_added() -> None:
    assert policy_options(SchedulerServiceConfig(worker_addrs=("w:1",), policy="bros"), _info(False)) == {}
    assert policy_options(SchedulerServiceConfig(worker_addrs=("w:1",), policy="fcfs"), _info()) == {}
    coded = SchedulerServiceConfig(worker_addrs=("w:1",), policy="tempo", policy_options=(("cost_model_path", "x"),))
    assert policy_options(coded, _info()) == {"cost_model_path": "x"}


@pytest.mark.parametrize("policy", ["bros", "tempo"])
def test_the_slack_bank_setting_reaches_the_policy(policy) -> None:
    config = SchedulerServiceConfig(worker_addrs=("w:1",), policy=policy, slack_bank_tpots=10.0)
    options = policy_options(config, _info())
    assert options["slack_bank_tpots"] == 10.0
    assert make_policy(policy, **options).step.slack_bank_tpots == 10.0
    off = policy_options(SchedulerServiceConfig(worker_addrs=("w:1",), policy=policy), _info())
    assert "slack_bank_tpots" not in off and make_policy(policy, **off).step.slack_bank_tpots == 0.0


def test_the_slack_bank_setting_is_refused_where_no_policy_reads_it() -> None:
    with pytest.raises(ValueError, match="--slack-bank-tpots is used by --policy bros or tempo only"):
        SchedulerServiceConfig(worker_addrs=("w:1",), policy="fcfs", slack_bank_tpots=10.0)
    with pytest.raises(ValueError, match="--slack-bank-tpots must be >= 0"):
        SchedulerServiceConfig(worker_addrs=("w:1",), policy="bros", slack_bank_tpots=-1.0)
