"""The simulator-only oracle of issue 9's target 4: tempo given every request's true output length
instead of its online quantile bounds (`tempo-oracle`), to measure what learning lengths costs.

The service can never reach it: it is built here, from the workload's lengths, and handed to
`TempoPolicy(lengths=...)` directly; the policy factory that the service uses (`make_policy`)
refuses a `lengths` option and knows no `tempo-oracle`, and nothing outside the simulator imports
this module (tests/contract/test_oracle_unreachable.py). The policy's code stays the same:
it asks its `OutputLengths` (core/output_lengths.py) and gets exact answers.
"""

from __future__ import annotations

from collections.abc import Mapping

from scheduler_svc.core.policy.tempo import TempoPolicy
from scheduler_svc.core.request import Request

ORACLE_POLICY = "tempo-oracle"


class OracleLengths:
    """Exact `OutputLengths` from the true output length of every request (by request id): the
    simulated model samples EOS as token number `true_lengths[id]`, so that is the total output."""

    __slots__ = ("_true",)

    def __init__(self, true_lengths: Mapping[str, int]) -> None:
        self._true = true_lengths

    def _length(self, req: Request) -> int:
        return max(1, min(req.sampling.max_tokens, self._true.get(req.request_id, req.sampling.max_tokens)))

    def observe(self, req: Request) -> None:
        """Nothing to learn: every length is known."""

    def upper_bound(self, req: Request, produced: int) -> int:
        return max(produced + 1, self._length(req))

    def typical(self, req: Request, produced: int) -> int | None:
        return max(produced, self._length(req))

    def typical_with_prior(self, req: Request, produced: int) -> int | None:
        return self.typical(req, produced)

    def fraction_at_most(self, req: Request, produced: int, length: float) -> float | None:
        return 1.0 if self._length(req) <= length else 0.0


def make_oracle_tempo(true_lengths: Mapping[str, int], **options: object) -> TempoPolicy:
    """tempo with the oracle's lengths; `options` as for `make_policy("tempo", ...)`."""
    try:
        return TempoPolicy(lengths=OracleLengths(true_lengths), **options)  # type: ignore[arg-type]
    except TypeError as err:
        raise ValueError(f"bad options for policy {ORACLE_POLICY!r}: {err}") from err
