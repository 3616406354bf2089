"""Linear layers whose weights are laid out once for the machine's matrix units.

On a CPU in bfloat16, `F.linear` works from the plain row-major weight every call, and at the few
rows of a decode step it runs well below what oneDNN reaches over a weight reordered once into its
blocked layout (what torch.compile's CPU freezing pass emits). Measured on a decoder layer's
projections, 2 threads of an AVX512-BF16 CPU (`benchmarks/gemm_ceiling.py`, docs/benchmarks.md):
34 vs 65 GFLOP/s at 1 row, 218 vs 350 at 8, 531 vs 651 at 32, 828 vs 908 at 128, 963 vs 1008 at
512. So the worker prepacks after loading. The elementwise work around the GEMMs (the residual adds,
SiLU(gate) * up) then runs in oneDNN's epilogues instead of as separate passes over [T, 3072]
activations: 1.45x on a decoder layer's MLP block at 1024 prefill rows, measured, the same as
torch.compile with freezing gave, without its per-layer compiles.

The dense weight stays the parameter (checkpoint loading and tests read it); the packed copies are
derived state, rebuilt by `prepack()`. Without packing every method is the plain torch expression.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)


def prepack_supported(dtype: torch.dtype, device: torch.device | str) -> bool:
    """True where a prepacked oneDNN linear is the faster path: bfloat16 on a CPU whose oneDNN has
    the ops (in float32, MKL's packed GEMM measured the same as `F.linear`)."""
    return (
        torch.device(device).type == "cpu"
        and dtype == torch.bfloat16
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


def pack_weight(weight: torch.Tensor) -> torch.Tensor:
    """weight [N, K] → an opaque oneDNN tensor for `packed_linear` (no batch-size hint: one layout
    serves decode and prefill rows; measured equal to hinted packs)."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None)


def packed_linear(
    x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None, activation: str = "none"
) -> torch.Tensor:
    # x [T, K] → [T, N]; activation is a oneDNN eltwise name ("none", "swish" = SiLU)
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, activation, [], "")


def packed_linear_then(x: torch.Tensor, other: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None,
                       op: str) -> torch.Tensor:
    # x [T, K], other [T, N] → (x W^T + b) `op` other, op "add" or "mul", in the GEMM's epilogue
    return torch.ops.mkldnn._linear_pointwise.binary(x, other, packed, bias, op)


class Linear(nn.Linear):
    """`nn.Linear` (same parameters, same state dict) that runs a prepacked weight once `prepack()`
    has been called."""

    packed: torch.Tensor | None = None

    def prepack(self) -> None:
        self.packed = pack_weight(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [T, K] → [T, N]
        if self.packed is None:
            return F.linear(x, self.weight, self.bias)
        return packed_linear(x, self.packed, self.bias)

    def forward_add(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:  # [T, K], [T, N] → [T, N]
        """`residual + self(x)`."""
        if self.packed is None:
            return residual + F.linear(x, self.weight, self.bias)
        return packed_linear_then(x, residual, self.packed, self.bias, "add")


class GateUpLinear(Linear):
    """The fused gate/up projection of a SwiGLU MLP: rows [0, I) are the gate, [I, 2I) the up
    projection. Packed, the two halves are separate oneDNN weights so that SiLU and the product
    run in the GEMM epilogues."""

    packed_gate: torch.Tensor | None = None
    packed_up: torch.Tensor | None = None

    def prepack(self) -> None:
        assert self.bias is None, "SwiGLU projections have no bias"
        half = self.weight.shape[0] // 2
        self.packed_gate = pack_weight(self.weight[:half])
        self.packed_up = pack_weight(self.weight[half:])

    def silu_mul(self, x: torch.Tensor) -> torch.Tensor:  # [T, K] → [T, I]
        """`silu(gate(x)) * up(x)`."""
        if self.packed_gate is None or self.packed_up is None:
            gate, up = F.linear(x, self.weight).chunk(2, dim=-1)
            return F.silu(gate) * up
        gate = packed_linear(x, self.packed_gate, None, "swish")
        return packed_linear_then(x, gate, self.packed_up, None, "mul")


def check_packed(weight: torch.Tensor, packed: torch.Tensor) -> bool:
    """A prepacked weight gives F.linear's answer on a few rows (a guard against a oneDNN build that
    accepts the ops but computes something else; bfloat16 rounding allowed)."""
    x = torch.randn(3, weight.shape[1], generator=torch.Generator().manual_seed(0)).to(weight.dtype)
    expected = F.linear(x.float(), weight.float())
    try:
        got = packed_linear(x, packed, None).float()
    except RuntimeError as err:
        logger.warning("prepacked linear failed (%s): using F.linear", err)
        return False
    tolerance = 0.02 * float(expected.abs().max()) + 1e-3
    return float((got - expected).abs().max()) <= tolerance
