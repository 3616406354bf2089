"""Builds a LlamaModel from a model source: a Hugging Face safetensors folder, a GGUF file
(dequantized with the `gguf` package, as transformers does, without importing transformers), or
dummy random weights from the config alone.

Parameters are created on the meta device and materialized once on the target device and dtype,
then every one is filled from the checkpoint (a missing one is an error, not a silent random init).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from llmserve.gguf_file import GgufFile
from llmserve.model_source import ModelSource, load_hf_config
from worker_svc.kernels.backend import AttentionBackend
from worker_svc.model.config import ModelConfig
from worker_svc.model.llama import LlamaModel

logger = logging.getLogger(__name__)

_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
# HF name inside a layer → (our fused name, which shard of it).
_FUSED = {
    "self_attn.q_proj": ("self_attn.qkv_proj", 0),
    "self_attn.k_proj": ("self_attn.qkv_proj", 1),
    "self_attn.v_proj": ("self_attn.qkv_proj", 2),
    "mlp.gate_proj": ("mlp.gate_up_proj", 0),
    "mlp.up_proj": ("mlp.gate_up_proj", 1),
}


def load_model(
    source: ModelSource,
    backend: AttentionBackend,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> LlamaModel:
    """The model of `source` on `device` in `dtype`, ready for inference. A GGUF's config and
    weights are read without transformers (its import and its GGUF parsing were most of a worker's
    start, issue 11)."""
    gguf = GgufFile(source.folder / source.gguf_file) if source.gguf_file else None
    config = ModelConfig.from_gguf(gguf) if gguf is not None else ModelConfig.from_hf(load_hf_config(source))
    model = _empty_model(config, backend, dtype, device)
    if source.load_format == "dummy":
        init_dummy_weights(model, seed)
    elif source.load_format == "gguf":
        assert gguf is not None, "a gguf load format has a GGUF file"
        load_hf_weights(model, gguf_hf_weights(gguf, config))
    elif source.load_format == "safetensors":
        load_hf_weights(model, _safetensors_weights(source.folder))
    else:
        raise ValueError(f"unknown load format {source.load_format!r}")
    return _ready(model)


def _empty_model(config: ModelConfig, backend: AttentionBackend, dtype: torch.dtype, device: torch.device | str) -> LlamaModel:
    with torch.device("meta"):
        model = LlamaModel(config, backend, device)
    return _materialize(model.to(dtype), torch.device(device))


def _materialize(model: LlamaModel, device: torch.device) -> LlamaModel:
    """`model.to_empty(device=device)` for its meta parameters and buffers, with plain `torch.empty`:
    `to_empty`'s `empty_like` of a meta tensor runs through torch._refs, whose first use imports
    sympy (0.5 s of a worker's start, issue 11)."""
    for module in model.modules():
        for name, param in module._parameters.items():
            if param is not None and param.is_meta:
                empty = torch.empty(param.shape, dtype=param.dtype, device=device)
                module._parameters[name] = nn.Parameter(empty, requires_grad=param.requires_grad)
        for name, buffer in module._buffers.items():
            if buffer is not None and buffer.is_meta:
                module._buffers[name] = torch.empty(buffer.shape, dtype=buffer.dtype, device=device)
    return model


def model_from_hf_state_dict(
    config: ModelConfig,
    weights: Iterable[tuple[str, torch.Tensor]],
    backend: AttentionBackend,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> LlamaModel:
    """Builds our model from Hugging Face parameter names and tensors (e.g. an HF model's
    `state_dict().items()`)."""
    model = _empty_model(config, backend, dtype, device)
    load_hf_weights(model, weights)
    return _ready(model)


def _ready(model: LlamaModel) -> LlamaModel:
    """Inference mode, with the weights laid out for the machine's fastest GEMM path (a no-op where
    there is none: see `linear.py`)."""
    if model.prepack_linears():
        logger.info("linear weights prepacked for oneDNN (%s)", str(model.embed_tokens.weight.dtype))
    return model.eval()


@torch.no_grad()
def load_hf_weights(model: LlamaModel, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
    """Copies Hugging Face-named tensors into the model (fusing q/k/v and gate/up); raises
    ValueError when a tensor has the wrong shape or a parameter stays unfilled."""
    config = model.config
    params = dict(model.named_parameters())
    filled: set[tuple[str, int]] = set()
    q_size, kv_size = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    shard_rows = {"self_attn.qkv_proj": (q_size, kv_size, kv_size), "mlp.gate_up_proj": (config.intermediate_size,) * 2}
    for name, tensor in weights:
        target, shard = _our_name(name, config)
        if target is None:
            continue
        param = params.get(target)
        if param is None:
            raise ValueError(f"checkpoint tensor {name} maps to unknown parameter {target}")
        if shard is None:
            dest = param
        else:
            sizes = shard_rows[_module_of(target)]
            start = sum(sizes[:shard])
            dest = param[start : start + sizes[shard]]
        if tuple(dest.shape) != tuple(tensor.shape):
            raise ValueError(f"checkpoint tensor {name} has shape {tuple(tensor.shape)}, expected {tuple(dest.shape)}")
        dest.copy_(tensor)
        filled.add((target, -1 if shard is None else shard))
    expected = [piece for pname in params for piece in _pieces(pname, shard_rows)]
    missing = [f"{n}[{s}]" if s >= 0 else n for n, s in expected if (n, s) not in filled]
    if missing:
        raise ValueError(f"checkpoint lacks {len(missing)} parameters, e.g. {', '.join(missing[:5])}")


def _module_of(param_name: str) -> str:
    """`layers.3.self_attn.qkv_proj.weight` → `self_attn.qkv_proj`."""
    return param_name.split(".", 2)[2].rsplit(".", 1)[0] if param_name.startswith("layers.") else ""


def _pieces(param_name: str, shard_rows: dict[str, tuple[int, ...]]) -> list[tuple[str, int]]:
    """What must be filled for one parameter: each shard of a fused one, else the whole (-1)."""
    module = _module_of(param_name)
    if module in shard_rows:
        return [(param_name, s) for s in range(len(shard_rows[module]))]
    return [(param_name, -1)]


def _our_name(hf_name: str, config: ModelConfig) -> tuple[str | None, int | None]:
    """Our parameter name and fused shard index for a Hugging Face name (None: not a weight we use)."""
    if hf_name == "model.embed_tokens.weight":
        return "embed_tokens.weight", None
    if hf_name == "model.norm.weight":
        return "norm.weight", None
    if hf_name == "lm_head.weight":
        # Tied checkpoints may still carry a copy of the embedding: ours reads the embedding.
        return (None, None) if config.tie_word_embeddings else ("lm_head.weight", None)
    match = _LAYER.match(hf_name)
    if match is None:
        return None, None  # rotary inv_freq buffers and the like
    index, rest = match.groups()
    module, _, kind = rest.rpartition(".")
    if module in _FUSED:
        fused, shard = _FUSED[module]
        return f"layers.{index}.{fused}.{kind}", shard
    return f"layers.{index}.{rest}", None


def _safetensors_weights(folder: Path) -> Iterator[tuple[str, torch.Tensor]]:
    from safetensors import safe_open

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise ValueError(f"{folder} has no *.safetensors files")
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                yield name, f.get_tensor(name)


# GGUF tensor names (llama.cpp's, per block "blk.N.") -> Hugging Face names, for the Llama family.
_GGUF_GLOBAL = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_GGUF_BLOCK = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
               "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
               "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
               "ffn_down": "mlp.down_proj"}
_GGUF_BLOCK_NAME = re.compile(r"^blk\.(\d+)\.([a-z_]+)\.(weight|bias)$")


def gguf_hf_name(gguf_name: str) -> str:
    """The Hugging Face name of a llama.cpp tensor name; ValueError for one this model has no place for."""
    match = _GGUF_BLOCK_NAME.match(gguf_name)
    if match is not None and match.group(2) in _GGUF_BLOCK:
        return f"model.layers.{match.group(1)}.{_GGUF_BLOCK[match.group(2)]}.{match.group(3)}"
    base, _, kind = gguf_name.rpartition(".")
    if base in _GGUF_GLOBAL and kind in ("weight", "bias"):
        return f"{_GGUF_GLOBAL[base]}.{kind}"
    raise ValueError(f"GGUF tensor {gguf_name} is not a tensor of a Llama-family model")


def gguf_hf_weights(gguf: GgufFile, config: ModelConfig) -> Iterator[tuple[str, torch.Tensor]]:
    """The GGUF's tensors under their Hugging Face names, float32, one at a time: what transformers'
    GGUF loader (`load_gguf_checkpoint`) hands its model, bit for bit (a test compares them): each
    tensor dequantized by `gguf.dequantize`, and for a "llama" file the q/k rows put back in
    Hugging Face's order (llama.cpp's converter interleaves each head's two rotary halves;
    transformers' `LlamaTensorProcessor`)."""
    from gguf import dequantize  # numpy only

    llama_order = gguf.get("general.architecture") == "llama"
    logger.info("dequantizing %s", gguf.path)
    for name, info in gguf.tensors.items():
        hf_name = gguf_hf_name(name)
        weights = dequantize(gguf.tensor_data(name), info.ggml_type)
        if llama_order and ".attn_q." in name:
            weights = _unpermute_rotary_rows(weights, config.num_heads)
        elif llama_order and ".attn_k." in name:
            weights = _unpermute_rotary_rows(weights, config.num_kv_heads)
        if weights.dtype != np.float32:
            raise ValueError(f"GGUF tensor {name} dequantizes to {weights.dtype}, not float32")
        if not (weights.flags.writeable and weights.flags.c_contiguous):
            weights = np.copy(weights)  # a view of the mapped file, or a permuted view
        yield hf_name, torch.from_numpy(weights)


def _unpermute_rotary_rows(weights: np.ndarray, num_heads: int) -> np.ndarray:
    """Undoes llama.cpp's `permute` of a q or k projection (`convert_hf_to_gguf.py`): per head, rows
    (2, dim) back to (dim, 2) order, as transformers' `_reverse_permute_weights`."""
    dim = weights.shape[0] // num_heads // 2
    return weights.reshape(num_heads, dim, 2, *weights.shape[1:]).swapaxes(2, 1).reshape(weights.shape)


@torch.no_grad()
def init_dummy_weights(model: LlamaModel, seed: int) -> None:
    """Seeded random weights (N(0, 0.02), norms at 1): same seed, same model, on any device."""
    gen = torch.Generator(device=model.embed_tokens.weight.device).manual_seed(seed)
    for name, param in model.named_parameters():
        if name.endswith("norm.weight"):
            param.fill_(1.0)
        elif name.endswith(".bias"):
            param.zero_()
        else:
            param.normal_(0.0, 0.02, generator=gen)
