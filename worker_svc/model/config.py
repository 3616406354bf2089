"""The model's architecture, read once from a transformers config into a frozen dataclass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


def _rope_parameters(hf: Any) -> dict[str, Any]:
    """transformers 5 keeps RoPE settings in `rope_parameters`; older configs in `rope_theta`
    plus `rope_scaling`."""
    params = getattr(hf, "rope_parameters", None)
    if isinstance(params, dict) and params:
        return dict(params)
    merged: dict[str, Any] = {"rope_theta": getattr(hf, "rope_theta", 10000.0)}
    merged.update(getattr(hf, "rope_scaling", None) or {})
    return merged
