"""GPU tests run the Triton kernels compiled, not interpreted: on a CUDA machine this turns off the
interpreter that tests/conftest.py enables. Run them alone so no kernel module was imported
(decorated) in interpreter mode first:  TRITON_INTERPRET=0 pytest -m gpu tests/gpu"""

from __future__ import annotations

import os

import torch

if torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "0"
