"""Request ids and seeds that the gateway assigns when the client leaves them unset."""

from __future__ import annotations

import random
import uuid

SEED_BITS = 63  # fits a signed 64-bit integer, which every sampler backend (torch, numpy) accepts


def new_request_id() -> str:
    """A fresh id: uuid4 as 32 hex digits."""
    return uuid.uuid4().hex


def random_seed(rng: random.Random) -> int:
    """A random 63-bit seed. Fixing it at the gateway makes a recomputed or resumed request sample
    the same tokens (output token i is drawn from a generator seeded by (seed, i))."""
    return rng.getrandbits(SEED_BITS)
