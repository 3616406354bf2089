"""What the core knows of its worker's prefix cache (issue 13): a port, not a cache.

The worker holds the cache; the core only asks how much of a prompt it holds and, when it admits
the request, claims that prefix so it stays cached until the worker drops the request (finished,
preempted or failed: the worker releases the claim). The simulator implements the port on the
same `llmserve.prefix` index its simulated worker fills; the service implements it with a mirror
of the live worker's reports (`core/prefix_mirror.py`, whose `observe` the core calls with each
step result that carries a report: a simulated worker's never do), where the live worker itself
references the blocks when it admits the request.
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
