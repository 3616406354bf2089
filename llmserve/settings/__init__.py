"""Settings declared once, as fields of a frozen config dataclass; flags, LLMSERVE_* variables,
help and child-process environments are derived from the declaration.

    @dataclass(frozen=True, kw_only=True)
    class WorkerConfig:
        max_num_seqs: int = setting(0, auto=True, help="most sequences per step")

gives `--max-num-seqs N` (help "most sequences per step (default: auto; env LLMSERVE_MAX_NUM_SEQS)"),
the variable `LLMSERVE_MAX_NUM_SEQS` as the flag's fallback, and `to_env(config)` renders the value
back as `LLMSERVE_MAX_NUM_SEQS=...` for a child process. The flag comes from the field name (or
`flag=`, for a field stored in other units than it is typed in: `host_tier_bytes` is set as
`--host-tier-gb` with `unit=GIB`), the variable from the flag. The type comes from the annotation:
str, int, float, bool (`--x/--no-x`), `str | None` (empty is None), `tuple[str, ...]` (comma
separated) and `Literal[...]` (its values are the choices). Like vLLM's flags derived from its config
dataclasses (`get_kwargs` in vllm/engine/arg_utils.py), minus the docstring parsing: help is explicit.

Pure and stdlib-only, so that every layer can declare its settings here. Files: `declare.py`
(`setting()` and the specs read from a config class), `spec.py` (one setting: how it is spelt,
parsed and rendered), `derive.py` (flags, variables, help and configs derived from the specs).
"""

from llmserve.settings.declare import exposed, redefault, setting, specs
from llmserve.settings.derive import (
    add_settings,
    check_choices,
    config_from_args,
    config_from_env,
    env_names,
    to_env,
    values_env,
    values_from_args,
)
from llmserve.settings.spec import AUTO, ENV_PREFIX, Spec

__all__ = [
    "AUTO",
    "ENV_PREFIX",
    "Spec",
    "add_settings",
    "check_choices",
    "config_from_args",
    "config_from_env",
    "env_names",
    "exposed",
    "redefault",
    "setting",
    "specs",
    "to_env",
    "values_env",
    "values_from_args",
]
