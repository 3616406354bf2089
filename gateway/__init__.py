"""The public Gateway service: validation, tokenization, incremental detokenization, stop strings,
usage accounting. `core/` is pure and synchronous; `server.py` is the async gRPC shell."""
