"""Prefix caching's pure core, shared by the KV store, the scheduler and the simulator: block
identity (`block_hash.py`), the index of cached blocks with reference counts and LRU eviction
(`index.py`), a block pool that lends cached blocks' space back (`pool.py`), and what a
trace lets a cache serve (`reuse.py`: the infinite-cache bound, an LRU reference). Standard library only."""

from llmserve.prefix.block_hash import (BlockHash, chain_from_tokens, chain_from_trace_ids, max_cached_blocks,
                                        tenant_salt)
from llmserve.prefix.index import PrefixIndex
from llmserve.prefix.pool import CachingBlockPool
from llmserve.prefix.reuse import ReuseBound, lru_reference, reuse_bound

__all__ = ["BlockHash", "CachingBlockPool", "PrefixIndex", "ReuseBound", "chain_from_tokens", "chain_from_trace_ids",
           "lru_reference", "max_cached_blocks", "reuse_bound", "tenant_salt"]
