"""The row counts a prepacked oneDNN linear is run at: a fixed set, so that its primitives are too.

oneDNN builds (JIT-compiles) one primitive per weight shape, post-op and row count, and keeps it
in two caches of up to 1,024 entries each (its own and ideep's, `LRU_CACHE_CAPACITY`). A decoder
step runs five such linears at its token count T and the LM head at its sampled rows S, and T takes
any value up to the step budget: measured (`benchmarks/worker_rss.py`, SmolLM2-135M, bfloat16, 2
threads), each new row count costs 3.5-4 MB of resident memory (0.64-0.73 MB a primitive) and ~3 ms
of JIT time per linear, until the caches evict and rebuild; that was most of the workers' RSS growth
in the soak (issue 11, docs/reliability.md).

So a step's rows are padded up to the next of a few sizes (`LlamaModel.forward`; padding rows ride
through the linears and norms only, never into the KV cache or attention), and the runner's warm-up
builds every size's primitives before the worker serves. The sizes follow what a padding row costs:
a prepacked linear's time at M rows is about that of (64 + M) rows of arithmetic (the weight is read
once whatever M is; measured 0.97 ms at 1 row, 2.0 at 64, 4.9 at 256, 8.8 at 512 for a decoder
layer's projections), so each size is the largest that pads the row count just above the previous
one by at most `MAX_PAD_COST` of its cost. Up to 512 rows that is 52 sizes (3, 6, 9, 12, 16, ...,
494, 512); padding costs the linears 1.9% on average over uniformly spread row counts, 4% at most.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

# A linear's time at M rows is about WEIGHT_READ_ROWS + M rows of arithmetic (measured, above).
WEIGHT_READ_ROWS = 64
MAX_PAD_COST = 0.04


def bucket_sizes(max_rows: int, weight_read_rows: int = WEIGHT_READ_ROWS,
                 max_pad_cost: float = MAX_PAD_COST) -> tuple[int, ...]:
    """Ascending sizes up to and including `max_rows`: after size b the next pads b+1 rows by at
    most `max_pad_cost` of their cost, (weight_read_rows + b + 1) rows."""
    sizes: list[int] = []
    size = 0
    while size < max_rows:
        size = min(max_rows, size + 1 + int(max_pad_cost * (weight_read_rows + size + 1)))
        sizes.append(size)
    return tuple(sizes)


@dataclass(frozen=True)
class RowBuckets:
    sizes: tuple[int, ...]  # ascending

    @classmethod
    def up_to(cls, max_rows: int) -> RowBuckets:
        return cls(bucket_sizes(max_rows))

    def rows_for(self, rows: int) -> int:
        """The size `rows` are padded to; more rows than the largest size run as they are (a step
        never has more than the runner's token budget, which the largest size is)."""
        if rows == 0:  # no sampled row: no LM head to run
            return 0
        index = bisect.bisect_left(self.sizes, rows)
        return self.sizes[index] if index < len(self.sizes) else rows
