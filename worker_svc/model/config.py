"""The model's architecture, read once from a transformers config (or a GGUF file's metadata,
without transformers) into a frozen dataclass."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmserve.gguf_file import GgufFile

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "mistral")


@dataclass(frozen=True)
class Llama3RopeScaling:
    """`rope_type: llama3` frequency scaling (Llama 3.1+): long wavelengths are slowed by
    `factor`, short ones kept, the band between interpolated."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int


@dataclass(frozen=True)
class ModelConfig:
    """What the model code needs to know about a Llama-family checkpoint."""

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: Llama3RopeScaling | None
    max_model_len: int  # longest sequence served (max positions, capped by a sliding window)
    qkv_bias: bool  # Qwen2 has biases on q/k/v
    tie_word_embeddings: bool  # SmolLM2: the LM head reuses the embedding matrix
    eos_token_ids: tuple[int, ...]

    @classmethod
    def from_hf(cls, hf: Any) -> ModelConfig:
        """Reads a transformers LlamaConfig / Qwen2Config / MistralConfig; raises ValueError for
        anything this model code would compute wrongly."""
        model_type = getattr(hf, "model_type", "")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(f"model_type {model_type!r} is not supported (supported: {', '.join(SUPPORTED_MODEL_TYPES)})")
        if getattr(hf, "hidden_act", "silu") != "silu":
            raise ValueError(f"hidden_act {hf.hidden_act!r} is not supported (only silu)")
        num_heads = int(hf.num_attention_heads)
        num_kv_heads = int(getattr(hf, "num_key_value_heads", None) or num_heads)
        head_dim = int(getattr(hf, "head_dim", None) or hf.hidden_size // num_heads)
        rope = _rope_parameters(hf)
        rope_type = rope.get("rope_type", rope.get("type", "default")) or "default"
        scaling: Llama3RopeScaling | None = None
        if rope_type == "llama3":
            scaling = Llama3RopeScaling(
                factor=float(rope["factor"]),
                low_freq_factor=float(rope["low_freq_factor"]),
                high_freq_factor=float(rope["high_freq_factor"]),
                original_max_position_embeddings=int(rope["original_max_position_embeddings"]),
            )
        elif rope_type != "default":
            raise ValueError(f"rope_type {rope_type!r} is not supported (default or llama3)")
        max_len = int(hf.max_position_embeddings)
        # No sliding-window kernel: serve only the range where full attention is exact.
        window = getattr(hf, "sliding_window", None)
        if model_type == "qwen2" and not getattr(hf, "use_sliding_window", False):
            window = None
        if window:
            max_len = min(max_len, int(window))
        eos = getattr(hf, "eos_token_id", None)
        eos_ids = tuple(int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else []))
        return cls(
            model_type=model_type,
            vocab_size=int(hf.vocab_size),
            hidden_size=int(hf.hidden_size),
            intermediate_size=int(hf.intermediate_size),
            num_layers=int(hf.num_hidden_layers),
            num_heads=num_heads,
            num_kv_heads=num_kv_heads,
            head_dim=head_dim,
            rms_norm_eps=float(hf.rms_norm_eps),
            rope_theta=float(rope.get("rope_theta", getattr(hf, "rope_theta", 10000.0))),
            rope_scaling=scaling,
            max_model_len=max_len,
            qkv_bias=model_type == "qwen2" or bool(getattr(hf, "attention_bias", False)),
            tie_word_embeddings=bool(getattr(hf, "tie_word_embeddings", False)),
            eos_token_ids=eos_ids,
        )


    @classmethod
    def from_gguf(cls, gguf: GgufFile) -> ModelConfig:
        """Reads a GGUF file's metadata (`gguf_config_fields`); the same config as `from_hf` of
        transformers' `AutoConfig.from_pretrained(..., gguf_file=...)`, with no transformers import."""
        return cls.from_hf(SimpleNamespace(**gguf_config_fields(gguf)))


# GGUF architectures this model code serves, and the metadata keys (under "<arch>.") that
# transformers' GGUF loader maps to config fields (transformers.integrations.ggml.GGUF_CONFIG_MAPPING).
GGUF_ARCHITECTURES = ("llama", "qwen2")
_GGUF_REQUIRED = {"block_count": "num_hidden_layers", "context_length": "max_position_embeddings",
                  "embedding_length": "hidden_size", "feed_forward_length": "intermediate_size",
                  "attention.head_count": "num_attention_heads",
                  "attention.layer_norm_rms_epsilon": "rms_norm_eps"}
_GGUF_OPTIONAL = {"attention.head_count_kv": "num_key_value_heads", "rope.freq_base": "rope_theta",
                  "vocab_size": "vocab_size"}


def gguf_config_fields(gguf: GgufFile) -> dict[str, Any]:
    """The transformers config fields `ModelConfig.from_hf` reads, from a GGUF file's metadata as
    transformers 5's GGUF loader maps them (`load_gguf_checkpoint`, `GGUF_CONFIG_MAPPING`) with the
    config class's defaults where the file has no value; raises ValueError naming a missing field
    or what this model code would compute wrongly."""
    where = f"GGUF {gguf.path.name}"
    arch = gguf.get("general.architecture")
    if not isinstance(arch, str):
        raise ValueError(f"{where}: no general.architecture in its metadata")
    if arch not in GGUF_ARCHITECTURES:
        raise ValueError(f"{where}: architecture {arch!r} is not supported (supported: {', '.join(GGUF_ARCHITECTURES)})")
    fields: dict[str, Any] = {"model_type": arch, "hidden_act": "silu"}
    for key, name in _GGUF_REQUIRED.items():
        value = gguf.get(f"{arch}.{key}")
        if value is None:
            raise ValueError(f"{where}: metadata {arch}.{key} ({name}) is missing")
        fields[name] = value
    for key, name in _GGUF_OPTIONAL.items():
        if (value := gguf.get(f"{arch}.{key}")) is not None:
            fields[name] = value
    if "vocab_size" not in fields:  # as transformers: the tokenizer's token count
        tokens = gguf.metadata.get("tokenizer.ggml.tokens")
        if tokens is None:
            raise ValueError(f"{where}: neither {arch}.vocab_size nor tokenizer.ggml.tokens says the vocabulary size")
        fields["vocab_size"] = len(tokens)
    if arch == "llama":  # transformers maps rope.dimension_count to head_dim for llama (not qwen2)
        if (head_dim := gguf.get("llama.rope.dimension_count")) is not None:
            fields["head_dim"] = head_dim
        # transformers' GGUF loader makes a "llama" file a Mistral config when its general.name
        # list contains "mistral", i.e. the name is exactly that; MistralConfig's sliding window
        # (4096) then bounds max_model_len in from_hf.
        if gguf.get("general.name") == "mistral":
            fields["model_type"] = "mistral"
            fields["sliding_window"] = 4096
    if (eos := gguf.get("tokenizer.ggml.eos_token_id")) is not None:
        fields["eos_token_id"] = eos
    # As transformers: the LM head is tied to the embedding unless the file has its own.
    fields["tie_word_embeddings"] = "output.weight" not in gguf.tensors
    # llama.cpp writes RoPE scaling as metadata (linear, yarn) or, for Llama 3's, as a
    # rope_freqs tensor; transformers' GGUF config reads neither, and this model code would run
    # such a model with plain RoPE: refuse it.
    scaling = gguf.get(f"{arch}.rope.scaling.type")
    if scaling not in (None, "none") or "rope_freqs.weight" in gguf.tensors:
        raise ValueError(f"{where}: RoPE scaling ({scaling or 'rope_freqs.weight'}) is not supported from GGUF")
    for name in ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
                 "max_position_embeddings", "vocab_size"):
        if not isinstance(fields[name], int) or fields[name] <= 0:
            raise ValueError(f"{where}: {name} {fields[name]!r} must be a positive integer")
    return fields


def _rope_parameters(hf: Any) -> dict[str, Any]:
    """transformers 5 keeps RoPE settings in `rope_parameters`; older configs in `rope_theta`
    plus `rope_scaling`."""
    params = getattr(hf, "rope_parameters", None)
    if isinstance(params, dict) and params:
        return dict(params)
    merged: dict[str, Any] = {"rope_theta": getattr(hf, "rope_theta", 10000.0)}
    merged.update(getattr(hf, "rope_scaling", None) or {})
    return merged
