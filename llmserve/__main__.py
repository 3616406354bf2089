"""`python -m llmserve` is not the command any more: the `llmserve` command lives on the top floor
(`llmserve_stack`), which the shared runtime does not import."""

import sys

print("the llmserve command is `llmserve ...` (console script) or `python -m llmserve_stack ...`", file=sys.stderr)
sys.exit(2)
