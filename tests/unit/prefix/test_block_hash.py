"""Block identity: chains over tokens and over a trace's block ids, tenant salts, the last-token rule."""

from __future__ import annotations

import pytest

from llmserve.prefix import (chain_from_tokens, chain_from_trace_ids, lru_reference, max_cached_blocks, reuse_bound,
                             tenant_salt)


def test_a_chain_names_full_blocks_and_their_whole_prefix() -> None:
    salt = tenant_salt("acme")
    a = chain_from_tokens(list(range(50)), 16, salt)
    b = chain_from_tokens(list(range(32)) + [7] * 18, 16, salt)
    assert len(a) == 3 and len(b) == 3  # the partial 4th block is not named
    assert a[:2] == b[:2] and a[2] != b[2]
    c = chain_from_tokens([99] + list(range(1, 50)), 16, salt)
    assert all(x != y for x, y in zip(a, c))  # a different first block changes every later name


def test_tenants_share_only_through_the_shared_salt() -> None:
    tokens = list(range(64))
    assert chain_from_tokens(tokens, 16, tenant_salt("a")) != chain_from_tokens(tokens, 16, tenant_salt("b"))
    shared = {"a", "b"}
    assert chain_from_tokens(tokens, 16, tenant_salt("a", shared)) == chain_from_tokens(tokens, 16,
                                                                                        tenant_salt("b", shared))
    assert tenant_salt("c", shared) != tenant_salt("a", shared)


def test_trace_ids_expand_into_sub_blocks_on_the_same_chain() -> None:
    salt = tenant_salt("")
    one = chain_from_trace_ids([5, 6, 7], 512, 16, 1100, salt)
    assert len(one) == 1100 // 16  # 68: two full trace blocks (64) and 4 of the partial third
    other = chain_from_trace_ids([5, 6, 9], 512, 16, 1536, salt)
    assert one[:64] == other[:64] and one[64] != other[64]
    assert chain_from_trace_ids([5], 512, 16, 5000, salt) == one[:32]  # no id, no block
    with pytest.raises(ValueError, match="must divide"):
        chain_from_trace_ids([5], 64, 48, 64, salt)


def test_the_last_prompt_token_is_always_computed() -> None:
    assert max_cached_blocks(32, 16) == 1 and max_cached_blocks(33, 16) == 2 and max_cached_blocks(1, 16) == 0


def test_the_bound_and_the_lru_reference() -> None:
    salt = tenant_salt("")
    a, b = chain_from_trace_ids([1, 2], 32, 16, 64, salt), chain_from_trace_ids([3, 4], 32, 16, 64, salt)
    prompts = [(65, a), (65, b), (65, a)]  # 65 tokens: all 4 blocks may come from the cache
    bound = reuse_bound(prompts, 16)
    assert (bound.num_blocks, bound.num_reusable) == (12, 4)
    assert lru_reference(prompts, 16, 8).num_reusable == 4  # both prompts fit
    assert lru_reference(prompts, 16, 6).num_reusable == 2  # a lost its tail to b: its first half is left
    assert lru_reference(prompts, 16, 4).num_reusable == 0
