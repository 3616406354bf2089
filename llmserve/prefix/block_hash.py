"""Block identity: a full block of KV is named by a hash chain over its tokens.

    salt ──▶ h0 = H(salt, tokens[0:B]) ──▶ h1 = H(h0, tokens[B:2B]) ──▶ ...   (B = block_size)

A block's hash names its whole prefix, so two prompts share block k exactly when they share
blocks 0..k and the tenant salt. Only full blocks are named: a partial last block is never shared.
The salt keeps tenants apart: two tenants never share KV unless both are in the configured
`shared` group (`tenant_salt`).

A trace that gives per-block ids instead of tokens (Mooncake's 512-token `hash_ids`, the Claude
Code traces' 64-token ones) builds the same chain with `chain_from_trace_ids`, so the simulator
matches, caches and evicts with the very logic the service runs.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence

BlockHash = int
SHARED_SALT_NAME = "\x00shared"


def _digest(parent: BlockHash, payload: bytes) -> BlockHash:
    # blake2b, not hash(): the chain must be the same in every process (store, scheduler, sim).
    h = hashlib.blake2b(parent.to_bytes(8, "little"), digest_size=8)
    h.update(payload)
    return int.from_bytes(h.digest(), "little")


def tenant_salt(tenant: str, shared_tenants: Iterable[str] = ()) -> BlockHash:
    """The chain's root for `tenant`: its own, or the one `shared` salt when it is configured to share."""
    name = SHARED_SALT_NAME if tenant in frozenset(shared_tenants) else tenant
    return _digest(0, name.encode("utf-8"))


def chain_from_tokens(token_ids: Sequence[int], block_size: int, salt: BlockHash) -> tuple[BlockHash, ...]:
    """The hashes of every full block of `token_ids`, in order."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    out: list[BlockHash] = []
    parent = salt
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        parent = _digest(parent, struct.pack(f"<{block_size}q", *token_ids[start:start + block_size]))
        out.append(parent)
    return tuple(out)


def chain_from_trace_ids(hash_ids: Sequence[int], trace_block_tokens: int, block_size: int, num_tokens: int,
                         salt: BlockHash) -> tuple[BlockHash, ...]:
    """The chain of a prompt of `num_tokens` tokens that a trace describes by the ids of its
    `trace_block_tokens`-token blocks: each trace block is `trace_block_tokens // block_size` of
    our blocks, named by (its trace id, its place inside it) on the chain. Equal trace ids on equal
    prefixes give equal chains; the prompt's partial last block is not named."""
    if block_size < 1 or trace_block_tokens % block_size:
        raise ValueError(f"block_size {block_size} must divide the trace's block of {trace_block_tokens} tokens")
    per_trace_block = trace_block_tokens // block_size
    num_full = min(num_tokens // block_size, len(hash_ids) * per_trace_block)
    out: list[BlockHash] = []
    parent = salt
    for k in range(num_full):
        trace_id, part = divmod(k, per_trace_block)
        parent = _digest(parent, struct.pack("<qq", hash_ids[trace_id], part))
        out.append(parent)
    return tuple(out)


def max_cached_blocks(num_prompt_tokens: int, block_size: int) -> int:
    """How many leading blocks of a prompt may come from the cache: at least its last token is
    computed, since the first output token is sampled from that token's logits."""
    return max(0, num_prompt_tokens - 1) // block_size
