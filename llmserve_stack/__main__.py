"""`python -m llmserve_stack ...`: the `llmserve` command."""

import sys

from llmserve_stack.cli import main

sys.exit(main())
