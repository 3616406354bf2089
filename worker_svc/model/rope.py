"""Rotary position embeddings (the rotate-half convention of Hugging Face Llama checkpoints)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from worker_svc.model.config import Llama3RopeScaling, ModelConfig


def inverse_frequencies(
    head_dim: int, theta: float, scaling: Llama3RopeScaling | None, device: torch.device
) -> torch.Tensor:  # [D/2] float32
    # Explicit devices everywhere: the model may be built under a meta-device context.
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64, device=device) / head_dim))
    if scaling is None:
        return inv_freq.float()
    # llama3: wavelengths longer than original_len / low_freq_factor are divided by `factor`,
    # shorter than original_len / high_freq_factor kept, and the band between blended smoothly.
    low_wavelen = scaling.original_max_position_embeddings / scaling.low_freq_factor
    high_wavelen = scaling.original_max_position_embeddings / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    smooth = (scaling.original_max_position_embeddings / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor
    )
    blended = (1 - smooth) * inv_freq / scaling.factor + smooth * inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / scaling.factor, inv_freq)
    is_mid = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(is_mid, blended, scaled).float()


class RotaryEmbedding:
    """Precomputed cos/sin tables for every position up to `max_model_len`, indexed per token."""

    def __init__(self, config: ModelConfig, device: torch.device) -> None:
        inv_freq = inverse_frequencies(config.head_dim, config.rope_theta, config.rope_scaling, device)
        positions = torch.arange(config.max_model_len, dtype=torch.float32, device=device)
        freqs = torch.outer(positions, inv_freq)  # [P, D/2]
        self.cos = freqs.cos()  # [P, D/2] float32
        self.sin = freqs.sin()

    def tables(self, positions: torch.Tensor, dtype: torch.dtype) -> RopeTables:  # positions [T]
        """The rotation of each token of one step, looked up once and shared by every layer."""
        return RopeTables(self.cos[positions].unsqueeze(1).to(dtype), self.sin[positions].unsqueeze(1).to(dtype))


@dataclass(frozen=True)
class RopeTables:
    cos: torch.Tensor  # [T, 1, D/2] in the model dtype
    sin: torch.Tensor

    def rotate(self, x: torch.Tensor) -> torch.Tensor:  # [T, H, D] → [T, H, D], contiguous
        # The first and second halves of the head dimension form the rotated pairs.
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * self.cos - x2 * self.sin, x2 * self.cos + x1 * self.sin), dim=-1)
