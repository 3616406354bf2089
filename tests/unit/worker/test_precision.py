"""`--dtype` resolution (worker_svc/model/precision.py) and the prepacked oneDNN linears
(worker_svc/model/linear.py) against plain torch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from worker_svc.model.linear import GateUpLinear, Linear, check_packed, pack_weight, prepack_supported
from worker_svc.model.precision import cpu_has_native_bf16, parse_dtype, resolve_dtype

CPU = torch.device("cpu")
needs_prepack = pytest.mark.skipif(not prepack_supported(torch.bfloat16, "cpu"),
                                   reason="this torch has no oneDNN bfloat16 linear")


def test_explicit_dtypes_win_and_unknown_ones_are_errors() -> None:
    assert resolve_dtype("float32", CPU) is torch.float32
    assert resolve_dtype("bfloat16", CPU) is torch.bfloat16
    assert resolve_dtype("auto", torch.device("cuda")) is torch.bfloat16
    with pytest.raises(ValueError, match="--dtype must be one of"):
        parse_dtype("fp8")


def test_auto_on_cpu_is_bfloat16_exactly_where_the_cpu_has_bf16_instructions() -> None:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo to check torch's CPU detection against")
    lines = cpuinfo.read_text().splitlines()
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    native = "amx_bf16" in flags or "avx512_bf16" in flags
    assert cpu_has_native_bf16() == (native and torch.backends.mkldnn.is_available())
    assert resolve_dtype("auto", CPU) is (torch.bfloat16 if cpu_has_native_bf16() else torch.float32)
    assert resolve_dtype("", CPU) is resolve_dtype("auto", CPU)


def _bf16(*shape: int, seed: int) -> torch.Tensor:
    return (torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 0.5).to(torch.bfloat16)


def _close(got: torch.Tensor, expected: torch.Tensor) -> None:
    # bfloat16 outputs: 8 bits of mantissa, so a relative 2^-7 of the largest value.
    torch.testing.assert_close(got.float(), expected.float(), atol=float(expected.abs().max()) / 128, rtol=0)


@needs_prepack
@pytest.mark.parametrize("rows", [1, 7, 128])
@pytest.mark.parametrize("bias", [False, True])
def test_prepacked_linear_and_its_residual_epilogue_match_f_linear(rows: int, bias: bool) -> None:
    layer = Linear(64, 96, bias=bias).to(torch.bfloat16)
    with torch.no_grad():
        layer.weight.copy_(_bf16(96, 64, seed=1))
        if bias:
            layer.bias.copy_(_bf16(96, seed=2))
    x, residual = _bf16(rows, 64, seed=3), _bf16(rows, 96, seed=4)
    with torch.inference_mode():
        plain, plain_add = layer(x), layer.forward_add(x, residual)
        layer.prepack()
        assert layer.packed is not None
        _close(layer(x), F.linear(x.float(), layer.weight.float(), None if layer.bias is None else layer.bias.float()))
        _close(layer(x), plain)
        _close(layer.forward_add(x, residual), plain_add)


@needs_prepack
def test_prepacked_gate_up_runs_silu_times_up_in_its_epilogues() -> None:
    layer = GateUpLinear(64, 2 * 80, bias=False).to(torch.bfloat16)
    with torch.no_grad():
        layer.weight.copy_(_bf16(160, 64, seed=5))
    x = _bf16(9, 64, seed=6)
    gate, up = F.linear(x.float(), layer.weight.float()).chunk(2, dim=-1)
    expected = F.silu(gate) * up
    with torch.inference_mode():
        _close(layer.silu_mul(x), expected)
        layer.prepack()
        _close(layer.silu_mul(x), expected)


@needs_prepack
def test_the_packing_check_rejects_a_weight_packed_from_other_values() -> None:
    weight = _bf16(96, 64, seed=7)
    assert check_packed(weight, pack_weight(weight))
    assert not check_packed(weight, pack_weight(_bf16(96, 64, seed=8)))


def test_float32_linears_are_not_packed() -> None:
    assert not prepack_supported(torch.float32, "cpu")
    assert not prepack_supported(torch.bfloat16, "cuda")
