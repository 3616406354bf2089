"""The KV store service: the authority over KV cache blocks.

`core/` holds the pure, synchronous state (two-ended block pools, leases with expiry, the host
tier of checkpointed best-effort KV); `server.py` starts the asyncio gRPC shell around it.
"""
