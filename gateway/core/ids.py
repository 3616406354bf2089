"""Request ids and seeds that the gateway assigns when the client leaves them unset."""

from __future__ import annotations

import hashlib
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


def scheduler_request_id(scope: str, request_id: str) -> str:
    """The id the scheduler knows a request by. Without API keys it is the client's id; with keys
    the id is unique per tenant only, so a short digest of the tenant goes in front (two tenants'
    `req-1` stay apart, and no tenant can name another's request to the scheduler)."""
    if not scope:
        return request_id
    return f"{hashlib.sha256(scope.encode('utf-8')).hexdigest()[:12]}:{request_id}"
