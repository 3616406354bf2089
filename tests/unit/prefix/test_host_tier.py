"""The prefix cache's host tier on its own (llmserve/prefix/host_tier.py): a bounded LRU by hash;
a hit runs along the chain from where the device's hit ends; a promotion takes blocks out."""

from __future__ import annotations

import pytest

from llmserve.prefix.host_tier import HostPrefixTier


def test_put_drops_the_least_recently_demoted_beyond_the_capacity() -> None:
    tier = HostPrefixTier(3)
    assert [tier.put(h, f"kv{h}") for h in (1, 2, 3)] == [[], [], []]
    assert tier.put(4, "kv4") == [1] and set(tier.hashes()) == {2, 3, 4}
    assert (tier.counts.demoted, tier.counts.dropped) == (4, 1)


def test_match_runs_along_the_chain_from_the_device_hit() -> None:
    tier = HostPrefixTier(8)
    for h in (12, 13, 15):
        tier.put(h, None)
    chain = (10, 11, 12, 13, 14, 15)
    assert tier.match(chain, 2, 4) == 2  # 12, 13; 14 is not here, so 15 cannot be used
    assert tier.match(chain, 2, 1) == 1 and tier.match(chain, 0, 6) == 0 and tier.match(chain, 5, 9) == 1


def test_take_moves_blocks_out_and_capacity_zero_keeps_nothing() -> None:
    tier = HostPrefixTier(4)
    tier.put(1, "a")
    tier.set_payload(1, "b")
    assert tier.take((1,)) == ["b"] and len(tier) == 0 and tier.counts.promoted == 1
    assert not tier.set_payload(1, "c") and not tier.discard(1)
    off = HostPrefixTier(0)
    assert off.put(7, "x") == [7] and len(off) == 0
    with pytest.raises(ValueError):
        HostPrefixTier(-1)
