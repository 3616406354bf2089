"""Where tempo learns how long a request's output will be: the `OutputLengths` interface, and the
one the service runs, `OnlineLengths` (online quantiles of finished requests, length_predictor.py).

The "no oracle" rule: the true output length of a request does not exist in the core (request.py),
so `OnlineLengths` answers from finished requests only. The simulator measures what that costs
against an oracle that knows every true length (`scheduler_svc/sim/oracle_lengths.py`, issue 9's
target 4); it reaches tempo only through `TempoPolicy(lengths=...)`, which the policy factory
(`make_policy`), the one the service builds its policy with, refuses to pass.
"""

from __future__ import annotations

from typing import Protocol

from scheduler_svc.core.length_predictor import LengthPredictor
from scheduler_svc.core.request import Request


class OutputLengths(Protocol):
    """Estimates of one request's total output length (prompt excluded), given that it has
    produced `produced` tokens (scheduled ones included)."""

    def observe(self, req: Request) -> None:
        """`req` finished normally (STOP or LENGTH): its output length is known now."""

    def upper_bound(self, req: Request, produced: int) -> int:
        """A bound on its total length, in (produced, max_tokens] while it is unfinished."""

    def typical(self, req: Request, produced: int) -> int | None:
        """Its median total length, from its own tenant's requests only; None while its tenant
        has too few of them."""

    def typical_with_prior(self, req: Request, produced: int) -> int | None:
        """As `typical`, but until its tenant has a few finished requests the other tenants'
        lengths fill in as a prior; None while nothing at all is known."""

    def fraction_at_most(self, req: Request, produced: int, length: float) -> float | None:
        """P(total length <= `length` | it is > `produced`); None while nothing is known."""


class OnlineLengths:
    """The service's estimates: quantiles of finished requests' lengths (LengthPredictor)."""

    __slots__ = ("predictor", "prior_samples")

    def __init__(self, quantile: float = 0.95, min_samples: int = 20, prior_samples: int = 5) -> None:
        """`prior_samples`: how many of its own finished requests a tenant needs before
        `typical_with_prior` is its own median alone (below that the other tenants' lengths fill
        in, `LengthPredictor.typical_length`)."""
        self.predictor = LengthPredictor(quantile=quantile, min_samples=min_samples)
        self.prior_samples = prior_samples

    def observe(self, req: Request) -> None:
        self.predictor.observe(req.tenant, req.num_prompt_tokens, req.num_output_tokens)

    def upper_bound(self, req: Request, produced: int) -> int:
        return self.predictor.upper_bound(req.tenant, req.num_prompt_tokens, req.sampling.max_tokens, produced)

    def typical(self, req: Request, produced: int) -> int | None:
        return self.predictor.length_quantile(req.tenant, req.num_prompt_tokens, produced, 0.5, tenant_only=True)

    def typical_with_prior(self, req: Request, produced: int) -> int | None:
        return self.predictor.typical_length(req.tenant, req.num_prompt_tokens, produced, self.prior_samples)

    def fraction_at_most(self, req: Request, produced: int, length: float) -> float | None:
        return self.predictor.fraction_at_most(req.tenant, req.num_prompt_tokens, produced, length)
