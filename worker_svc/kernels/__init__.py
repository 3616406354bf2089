"""Attention and KV-cache kernels: Triton kernels, each beside a pure-torch reference
(`reference.py`), and the attention backends the model calls (`backend.py`)."""
