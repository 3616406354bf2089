"""CI runs the README's test command, word for word, and that command is the full suite (every
test that needs no GPU) while pytest's default selection is the fast edit loop."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _readme_test_command() -> str:
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```bash\n(bash scripts/install.sh && [^\n]*pytest[^\n]*)\n```", readme)
    assert len(commands) == 1, commands
    return commands[0]


def test_ci_runs_the_readme_test_command() -> None:
    ci = [line for line in (ROOT / ".ci/run").read_text().splitlines() if line and not line.startswith(("#", "set ", "cd "))]
    assert ci == [_readme_test_command()]


def test_the_readme_command_runs_everything_but_gpu_and_the_default_is_the_fast_loop() -> None:
    assert _readme_test_command().endswith('pytest -q -m "not gpu" --durations=25')
    addopts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["addopts"]
    assert "-m 'not gpu and not slow and not e2e'" in addopts
