"""Builds a LlamaModel from a model source: a Hugging Face safetensors folder, a GGUF file
(dequantized by transformers), or dummy random weights from the config alone.

Parameters are created on the meta device and materialized once on the target device and dtype,
then every one is filled from the checkpoint (a missing one is an error, not a silent random init).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from llmserve.gguf_file import GgufFile
from llmserve.model_source import ModelSource, load_hf_config, transformers_attr
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
    """The model of `source` on `device` in `dtype`, ready for inference. A GGUF's config is read
    without transformers (its import and its GGUF parsing were most of a worker's start, issue 11)."""
    if source.gguf_file:
        config = ModelConfig.from_gguf(GgufFile(source.folder / source.gguf_file))
    else:
        config = ModelConfig.from_hf(load_hf_config(source))
    model = _empty_model(config, backend, dtype, device)
    if source.load_format == "dummy":
        init_dummy_weights(model, seed)
    elif source.load_format == "gguf":
        load_hf_weights(model, _gguf_weights(source))
    elif source.load_format == "safetensors":
        load_hf_weights(model, _safetensors_weights(source.folder))
    else:
        raise ValueError(f"unknown load format {source.load_format!r}")
    return _ready(model)


def _empty_model(config: ModelConfig, backend: AttentionBackend, dtype: torch.dtype, device: torch.device | str) -> LlamaModel:
    with torch.device("meta"):
        model = LlamaModel(config, backend, device)
    return model.to(dtype).to_empty(device=device)


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


def _gguf_weights(source: ModelSource) -> Iterator[tuple[str, torch.Tensor]]:
    """Dequantizes through transformers (it also undoes llama.cpp's q/k row permutation), then
    hands over its tensors one by one and drops the transformers model."""
    AutoModelForCausalLM = transformers_attr("AutoModelForCausalLM")  # noqa: N806 (the class)

    logger.info("dequantizing %s/%s", source.folder, source.gguf_file)
    hf_model = AutoModelForCausalLM.from_pretrained(
        source.folder, gguf_file=source.gguf_file, local_files_only=True, dtype=torch.float32
    )
    state = hf_model.state_dict()
    del hf_model
    while state:
        yield state.popitem()


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
