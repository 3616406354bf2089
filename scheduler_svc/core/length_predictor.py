"""Online upper bounds on a request's output length (Tempo's conservative length estimates).

The bound is the q-quantile (default 0.95) of the output lengths of recently *finished* requests
of the same (tenant, prompt-length bucket), falling back to (tenant, any), (any, bucket), then
all requests, and, with fewer than `min_samples` observations everywhere, to `max_tokens` (the
only safe bound for a cold start). Buckets are powers of two of the prompt length.

A request that outgrows its bound gets a new one: the q-quantile of the observed lengths that
exceed what it has produced so far (a conditional quantile), or twice its current length when no
observation is that long; always capped at its `max_tokens`. Only finished requests inform the
bounds; the true length of a running request is never read.
"""

from __future__ import annotations

import bisect
from collections import deque

_ANY = "*"


class _Window:
    """The last `size` observations, also kept sorted for quantiles."""

    __slots__ = ("recent", "ordered")

    def __init__(self, size: int) -> None:
        self.recent: deque[int] = deque(maxlen=size)
        self.ordered: list[int] = []

    def add(self, value: int) -> None:
        if len(self.recent) == self.recent.maxlen:
            old = self.recent[0]
            del self.ordered[bisect.bisect_left(self.ordered, old)]
        self.recent.append(value)
        bisect.insort(self.ordered, value)

    def quantile_above(self, q: float, floor: int) -> int | None:
        """q-quantile of the observations > floor (None when there are none)."""
        start = bisect.bisect_right(self.ordered, floor)
        n = len(self.ordered) - start
        if n <= 0:
            return None
        return self.ordered[start + min(n - 1, int(q * n))]


class LengthPredictor:
    def __init__(self, quantile: float = 0.95, min_samples: int = 20, window: int = 512) -> None:
        if not 0 < quantile <= 1 or min_samples < 1 or window < min_samples:
            raise ValueError("length predictor: 0 < quantile <= 1, min_samples >= 1, window >= min_samples")
        self.quantile = quantile
        self.min_samples = min_samples
        self.window = window
        self._windows: dict[tuple[str, object], _Window] = {}

    @staticmethod
    def bucket(num_prompt_tokens: int) -> int:
        return max(1, num_prompt_tokens).bit_length()

    def observe(self, tenant: str, num_prompt_tokens: int, num_output_tokens: int) -> None:
        """Records the output length of a finished request."""
        b = self.bucket(num_prompt_tokens)
        for key in ((tenant, b), (tenant, _ANY), (_ANY, b), (_ANY, _ANY)):
            window = self._windows.get(key)
            if window is None:
                window = self._windows[key] = _Window(self.window)
            window.add(num_output_tokens)

    def length_quantile(self, tenant: str, num_prompt_tokens: int, produced: int, q: float,
                        tenant_only: bool = False) -> int | None:
        """The q-quantile of the observed lengths above `produced` (same fallback order as
        `upper_bound`, or only the tenant's own windows; twice `produced` when none is that
        long); None at a cold start."""
        b = self.bucket(num_prompt_tokens)
        keys = ((tenant, b), (tenant, _ANY)) if tenant_only else ((tenant, b), (tenant, _ANY), (_ANY, b), (_ANY, _ANY))
        for key in keys:
            window = self._windows.get(key)
            if window is None or len(window.recent) < self.min_samples:
                continue
            estimate = window.quantile_above(q, produced)
            return 2 * max(produced, 1) if estimate is None else estimate
        return None

    def typical_length(self, tenant: str, num_prompt_tokens: int, produced: int, prior_samples: int) -> int | None:
        """The median total length of `tenant`'s requests, given one has produced `produced`
        tokens: from its own windows once one has `min_samples` (as `length_quantile` with
        `tenant_only`); before that, a weighted median of its own observations above `produced`
        (each weighing one) and the pooled ones of every tenant (same prompt bucket, else all;
        together weighing the `prior_samples` it still lacks). A median needs only a few
        samples, and until a tenant has them the other tenants' lengths are a better prior than
        none: a cold tenant's requests priced at `produced` (no tokens left to make) were started
        as if free, and under overload their prefills were wasted and crowded out RT work
        (docs/scheduling.md, target 4). None while nothing at all above `produced` is known."""
        warm = self.length_quantile(tenant, num_prompt_tokens, produced, 0.5, tenant_only=True)
        if warm is not None:
            return warm
        own_window = self._windows.get((tenant, _ANY))
        own = own_window.ordered if own_window is not None else []
        own = own[bisect.bisect_right(own, produced):]
        pooled: list[int] = []
        for key in ((_ANY, self.bucket(num_prompt_tokens)), (_ANY, _ANY)):
            window = self._windows.get(key)
            if window is not None and len(window.recent) >= self.min_samples:
                pooled = window.ordered[bisect.bisect_right(window.ordered, produced):]
                break
        prior_weight = max(0, prior_samples - len(own))
        if not own and not (pooled and prior_weight):
            return None
        return _weighted_median(own, pooled, prior_weight / len(pooled) if pooled else 0.0)

    def fraction_at_most(self, tenant: str, num_prompt_tokens: int, produced: int, length: float) -> float | None:
        """Of the observed lengths above `produced` (same fallback order as `upper_bound`), the
        fraction that is at most `length`: an estimate of P(output length ≤ length | it is
        > produced). None at a cold start (no window has `min_samples` observations)."""
        b = self.bucket(num_prompt_tokens)
        for key in ((tenant, b), (tenant, _ANY), (_ANY, b), (_ANY, _ANY)):
            window = self._windows.get(key)
            if window is None or len(window.recent) < self.min_samples:
                continue
            ordered = window.ordered
            start = bisect.bisect_right(ordered, produced)
            above = len(ordered) - start
            if above <= 0:
                return 0.0 if length <= produced else 0.5  # longer than all seen: no evidence either way
            return (bisect.bisect_right(ordered, length) - start) / above if length > produced else 0.0
        return None

    def upper_bound(self, tenant: str, num_prompt_tokens: int, max_tokens: int, produced: int = 0) -> int:
        """A bound on the total output length of a request that has produced `produced` tokens;
        always in (produced, max_tokens] (at least produced + 1 while it is unfinished)."""
        b = self.bucket(num_prompt_tokens)
        for key in ((tenant, b), (tenant, _ANY), (_ANY, b), (_ANY, _ANY)):
            window = self._windows.get(key)
            if window is None or len(window.recent) < self.min_samples:
                continue
            estimate = window.quantile_above(self.quantile, produced)
            if estimate is None:
                estimate = 2 * max(produced, 1)
            return max(produced + 1, min(max_tokens, estimate))
        return max_tokens


def _weighted_median(own: list[int], pooled: list[int], pooled_weight: float) -> int:
    """The median of two sorted samples, each of `own` weighing one, each of `pooled` `pooled_weight`."""
    items = sorted([(x, 1.0) for x in own] + [(x, pooled_weight) for x in pooled if pooled_weight > 0])
    half = sum(w for _, w in items) / 2
    acc = 0.0
    for value, weight in items:
        acc += weight
        if acc >= half:
            return value
    return items[-1][0]
