"""llmserve.settings: flags, LLMSERVE_* variables, help and child environments derived from one
declaration per setting; and the services' configs read back what `to_env` renders."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Literal

import pytest

from gateway.config import GatewayConfig
from kvstore_svc.config import GIB, MIB, KvStoreConfig
from llmserve.settings import (
    add_settings,
    config_from_args,
    config_from_env,
    exposed,
    redefault,
    setting,
    specs,
    to_env,
)
from scheduler_svc.config import SchedulerServiceConfig
from worker_svc.config import WorkerConfig


@dataclass(frozen=True, kw_only=True)
class Example:
    max_num_seqs: int = setting(0, auto=True, help="most sequences per step")
    host_tier_bytes: int = setting(2 * GIB, flag="--host-tier-gb", unit=GIB, help="host tier, GiB")
    warmup: bool = setting(True, help="warm up first")
    worker_addrs: tuple[str, ...] = setting((), help="workers")
    tokenizer: str | None = setting(None, help="tokenizer folder")
    mode: Literal["a", "b"] = setting("a", help="a mode")
    level: str = setting("INFO", choices=("DEBUG", "INFO"), parse=str.upper, help="level")
    ratio: float = setting(0.5, help="a ratio")
    not_a_setting: int = 7


@dataclass(frozen=True, kw_only=True)
class Required:
    name: str = setting(help="must be given")


def parse(cls: type, argv: list[str], env: dict[str, str] | None = None):
    parser = argparse.ArgumentParser()
    add_settings(parser, cls, env=env or {})
    return config_from_args(cls, parser.parse_args(argv))


def test_flag_and_variable_come_from_the_field_name_or_the_declared_flag() -> None:
    by_name = {s.name: s for s in specs(Example)}
    assert (by_name["max_num_seqs"].flag, by_name["max_num_seqs"].env) == ("--max-num-seqs", "LLMSERVE_MAX_NUM_SEQS")
    assert (by_name["host_tier_bytes"].flag, by_name["host_tier_bytes"].env) == ("--host-tier-gb", "LLMSERVE_HOST_TIER_GB")
    assert "not_a_setting" not in by_name
    assert by_name["mode"].choices == ("a", "b")


def test_defaults_variables_and_flags_in_that_order() -> None:
    assert parse(Example, []) == Example()
    env = {"LLMSERVE_MAX_NUM_SEQS": "8", "LLMSERVE_HOST_TIER_GB": "0.5", "LLMSERVE_WARMUP": "false",
           "LLMSERVE_WORKER_ADDRS": "a:1, b:2,", "LLMSERVE_TOKENIZER": "", "LLMSERVE_MODE": "b",
           "LLMSERVE_LEVEL": "debug", "LLMSERVE_RATIO": "0.25"}
    from_env = parse(Example, [], env)
    assert from_env == Example(max_num_seqs=8, host_tier_bytes=GIB // 2, warmup=False, worker_addrs=("a:1", "b:2"),
                               tokenizer=None, mode="b", level="DEBUG", ratio=0.25)
    flags = ["--max-num-seqs", "auto", "--host-tier-gb", "3", "--warmup", "--worker-addrs", "c:3",
             "--tokenizer", "/tok", "--mode", "a", "--level", "INFO", "--ratio", "1"]
    assert parse(Example, flags, env) == Example(max_num_seqs=0, host_tier_bytes=3 * GIB, warmup=True,
                                                 worker_addrs=("c:3",), tokenizer="/tok", mode="a", ratio=1.0)
    assert parse(Example, ["--no-warmup"]).warmup is False


def test_bad_values_name_the_flag_or_the_variable() -> None:
    with pytest.raises(ValueError, match="LLMSERVE_WARMUP='maybe'"):
        parse(Example, [], {"LLMSERVE_WARMUP": "maybe"})
    with pytest.raises(ValueError, match="LLMSERVE_MODE='c': choose one of a, b"):
        parse(Example, [], {"LLMSERVE_MODE": "c"})
    with pytest.raises(ValueError, match="LLMSERVE_MAX_NUM_SEQS"):
        parse(Example, [], {"LLMSERVE_MAX_NUM_SEQS": "many"})
    for argv in (["--mode", "c"], ["--ratio", "x"], ["--max-num-seqs", "1.5"]):
        with pytest.raises(SystemExit):
            parse(Example, argv)


def test_a_setting_without_default_is_required_unless_its_variable_is_set() -> None:
    with pytest.raises(SystemExit):
        parse(Required, [])
    assert parse(Required, [], {"LLMSERVE_NAME": "x"}).name == "x"
    assert parse(Required, ["--name", "y"]).name == "y"


def test_help_shows_default_and_variable() -> None:
    parser = argparse.ArgumentParser()
    add_settings(parser, Example, env={})
    text = " ".join(parser.format_help().split())  # argparse wraps lines
    assert "most sequences per step (default: auto; env LLMSERVE_MAX_NUM_SEQS)" in text
    assert "host tier, GiB (default: 2.0; env LLMSERVE_HOST_TIER_GB)" in text
    assert "--warmup, --no-warmup" in text and "warm up first (default: true; env LLMSERVE_WARMUP)" in text
    assert "tokenizer folder (default: none;" in text


def test_a_subset_of_settings() -> None:
    parser = argparse.ArgumentParser()
    add_settings(parser, Example, names=["ratio"], env={})
    assert vars(parser.parse_args([])).keys() == {"ratio"}


def test_to_env_renders_what_the_parser_reads_back() -> None:
    config = Example(max_num_seqs=0, host_tier_bytes=3 * GIB // 4, warmup=False, worker_addrs=("a:1", "b:2"),
                     tokenizer="/t", mode="b", level="DEBUG", ratio=0.125)
    env = to_env(config)
    assert env["LLMSERVE_MAX_NUM_SEQS"] == "auto" and env["LLMSERVE_HOST_TIER_GB"] == "0.75"
    assert env["LLMSERVE_WARMUP"] == "false" and env["LLMSERVE_WORKER_ADDRS"] == "a:1,b:2"
    assert config_from_env(Example, env) == config
    assert to_env(Example(), names=["tokenizer"]) == {"LLMSERVE_TOKENIZER": ""}


@pytest.mark.parametrize("config", [
    GatewayConfig(scheduler_addr="s:1", tokenizer="/tok", model="/m", load_format="dummy", log_level="DEBUG",
                  metrics_port=9464, drain_grace_s=3.0, abort_timeout_s=2.5),
    SchedulerServiceConfig(worker_addrs=("w:1", "w:2"), policy="bros", cost_model="/c.json", checkpoint_preemption=False,
                           log_format="text"),
    WorkerConfig(worker_id="worker-3", num_kv_blocks=96, max_num_seqs=8, warmup=False, forward_in_thread=False),
    KvStoreConfig(host_tier_bytes=256 * MIB, max_chunk_bytes=MIB // 2, lease_ttl_s=0.5),
])
def test_every_service_config_round_trips_through_its_variables(config: object) -> None:
    assert config_from_env(type(config), to_env(config)) == config


def test_string_defaults_are_not_parsed_again() -> None:
    @dataclass(frozen=True)
    class Shout:
        word: str = setting("hi", parse=lambda text: text + "!", help="a word")

    assert parse(Shout, []).word == "hi"
    assert parse(Shout, ["--word", "yo"]).word == "yo!"


def test_redefault_and_exposed_keep_the_declaration() -> None:
    @dataclass(frozen=True, kw_only=True)
    class Other:
        ratio: float = redefault(Example, "ratio", 0.75)
        warmup: bool = exposed(Example, "warmup")

    (ratio, warmup) = specs(Other)
    source = {s.name: s for s in specs(Example)}
    assert ratio.default == 0.75 and (ratio.flag, ratio.help) == (source["ratio"].flag, source["ratio"].help)
    assert warmup == source["warmup"]
    with pytest.raises(KeyError, match="no setting 'not_a_setting'"):
        exposed(Example, "not_a_setting")


def test_unsupported_types_and_bad_defaults_are_refused() -> None:
    @dataclass(frozen=True)
    class Listy:
        items: list[int] = setting(None, help="no")

    with pytest.raises(TypeError, match="not supported"):
        specs(Listy)

    @dataclass(frozen=True)
    class BadDefault:
        mode: Literal["a", "b"] = setting("c", help="no")

    with pytest.raises(ValueError, match="--mode must be one of a, b"):
        specs(BadDefault)
