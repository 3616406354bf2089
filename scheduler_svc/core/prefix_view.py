"""What the core knows of its worker's prefix cache (issue 13): a port, not a cache.

The worker (the KV store, in the service) holds the cache; the core only asks how much of a
prompt it holds and, when it admits the request, claims that prefix so it stays cached until the
worker drops the request (finished, preempted or failed: the worker releases the claim). The
simulator implements the port on the same `llmserve.prefix` index its simulated worker fills;
the service will mirror the store's index the same way (issue 13, phase B).
"""

from __future__ import annotations

from typing import Protocol

from scheduler_svc.core.request import Request


class PrefixCacheView(Protocol):
    def cached_tokens(self, req: Request) -> int:
        """Leading prompt tokens of `req` the cache holds now, a whole number of blocks and at
        most the prompt less one token (that token's logits give the first output). No claim."""
        ...

    def claim(self, req: Request) -> int:
        """References the prefix `cached_tokens(req)` names for `req` (the worker releases it when
        it drops the request); returns its tokens. Called once per admission."""
        ...
