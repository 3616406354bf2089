"""Per-tenant quotas: running requests, and tokens per sliding minute. Pure, with the clock passed in.

Tokens are charged as they are known: a request's prompt tokens when it is admitted, its
completion tokens when it ends. A request is admitted while the tenant's tokens of the last 60 s
plus its prompt stay within the limit; otherwise it gets CapacityError with `retry_after_s`, the
time until enough of the window has expired for it to fit. A prompt larger than the whole limit
can never fit and is told so (its retry would be refused forever).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from llmserve.errors import CapacityError

WINDOW_S = 60.0


@dataclass(frozen=True)
class Quota:
    """Limits of one tenant; 0 means no limit."""

    max_concurrent: int = 0
    tokens_per_minute: int = 0

    @property
    def unlimited(self) -> bool:
        return self.max_concurrent == 0 and self.tokens_per_minute == 0


@dataclass(slots=True)
class _TenantUse:
    running: int = 0
    charges: deque[tuple[float, int]] = field(default_factory=deque)  # (time, tokens), oldest first
    window_tokens: int = 0

    def expire(self, now: float) -> None:
        while self.charges and self.charges[0][0] <= now - WINDOW_S:
            self.window_tokens -= self.charges.popleft()[1]

    def charge(self, now: float, tokens: int) -> None:
        if tokens > 0:
            self.charges.append((now, tokens))
            self.window_tokens += tokens


@dataclass(slots=True)
class QuotaBook:
    """The use of every tenant that has a quota. `admit` and `finish` pair up per request."""

    quota: Quota
    tenants: dict[str, _TenantUse] = field(default_factory=dict)

    def admit(self, tenant: str, prompt_tokens: int, now: float) -> None:
        """Counts a request in, or raises CapacityError (with retry_after_s) naming the limit."""
        if self.quota.unlimited:
            return
        use = self.tenants.get(tenant) or _TenantUse()  # stored only once admitted: a refusal keeps nothing
        use.expire(now)
        limit = self.quota.max_concurrent
        if limit and use.running >= limit:
            raise CapacityError(
                f"tenant {tenant!r} has {use.running} requests running, its limit is {limit}: retry when one ends",
                retry_after_s=1.0,
            )
        tpm = self.quota.tokens_per_minute
        if tpm:
            if prompt_tokens > tpm:
                raise CapacityError(f"the prompt has {prompt_tokens} tokens, more than tenant {tenant!r}'s "
                                    f"{tpm} tokens per minute: send a shorter prompt")
            if use.window_tokens + prompt_tokens > tpm:
                raise CapacityError(
                    f"tenant {tenant!r} used {use.window_tokens} of its {tpm} tokens per minute: retry later",
                    retry_after_s=self._time_to_fit(use, prompt_tokens, now),
                )
        use.running += 1
        use.charge(now, prompt_tokens)
        self.tenants[tenant] = use

    def finish(self, tenant: str, completion_tokens: int, now: float) -> None:
        """Counts a request out and charges its completion tokens."""
        use = self.tenants.get(tenant)
        if use is None:
            return
        use.running = max(0, use.running - 1)
        use.charge(now, completion_tokens)
        use.expire(now)
        if use.running == 0 and not use.charges:
            del self.tenants[tenant]  # an idle tenant costs nothing

    def _time_to_fit(self, use: _TenantUse, tokens: int, now: float) -> float:
        need = use.window_tokens + tokens - self.quota.tokens_per_minute
        for at, charged in use.charges:
            need -= charged
            if need <= 0:
                return max(0.0, at + WINDOW_S - now)
        return WINDOW_S
