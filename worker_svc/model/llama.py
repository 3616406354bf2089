"""Llama-family decoder (Llama, Qwen2, Mistral, SmolLM2) over flattened mixed batches.

The forward pass takes the tokens of every scheduled sequence flattened into one dimension T
(prefill chunks and decodes together), writes their K/V into the paged cache, attends through the
cache, and computes logits only for the rows that sample. Projections are fused (q/k/v into one
matrix, gate/up into one) so each layer runs two big matmuls instead of five.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from worker_svc.kernels.backend import AttentionBackend
from worker_svc.model.config import ModelConfig
from worker_svc.model.kv_cache import KvCache
from worker_svc.model.metadata import AttentionMetadata
from worker_svc.model.rope import RotaryEmbedding


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [T, H] → [T, H]
        # The variance in float32, as the reference checkpoints were trained.
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.num_kv_heads = config.num_kv_heads
        self.head_dim = config.head_dim
        self.q_size = config.num_heads * config.head_dim
        self.kv_size = config.num_kv_heads * config.head_dim
        self.scale = config.head_dim**-0.5
        self.qkv_proj = nn.Linear(config.hidden_size, self.q_size + 2 * self.kv_size, bias=config.qkv_bias)
        self.o_proj = nn.Linear(self.q_size, config.hidden_size, bias=False)

    def forward(
        self,
        positions: torch.Tensor,  # [T]
        hidden: torch.Tensor,  # [T, hidden]
        k_cache: torch.Tensor,  # [N, bs, Hkv, D]
        v_cache: torch.Tensor,
        rope: RotaryEmbedding,
        backend: AttentionBackend,
        meta: AttentionMetadata,
        state: object,
    ) -> torch.Tensor:  # [T, hidden]
        T = hidden.shape[0]
        q, k, v = self.qkv_proj(hidden).split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.view(T, self.num_heads, self.head_dim)  # [T, Hq, D]
        k = k.view(T, self.num_kv_heads, self.head_dim)  # [T, Hkv, D]
        v = v.view(T, self.num_kv_heads, self.head_dim)
        q, k = rope.apply(positions, q, k)
        backend.write_kv(k, v.contiguous(), k_cache, v_cache, meta, state)
        out = backend.attend(q.contiguous(), k_cache, v_cache, meta, state, self.scale)  # [T, Hq, D]
        return self.o_proj(out.view(T, self.q_size))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.intermediate_size = config.intermediate_size
        self.gate_up_proj = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [T, hidden] → [T, hidden]
        gate, up = self.gate_up_proj(x).split(self.intermediate_size, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)


class LlamaModel(nn.Module):
    """Parameters are created wherever the caller's device context says (the loader builds them on
    the meta device and fills them); the RoPE tables go to `device` directly."""

    def __init__(self, config: ModelConfig, backend: AttentionBackend, device: torch.device | str) -> None:
        super().__init__()
        self.config = config
        self.backend = backend
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        # Tied checkpoints (SmolLM2) reuse the embedding matrix as the LM head.
        self.lm_head = None if config.tie_word_embeddings else nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.rope = RotaryEmbedding(config, torch.device(device))

    def lm_head_weight(self) -> torch.Tensor:  # [V, hidden]
        return self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight

    @torch.inference_mode()
    def forward(
        self,
        input_ids: torch.Tensor,  # [T]
        positions: torch.Tensor,  # [T]
        meta: AttentionMetadata,
        kv_cache: KvCache,
        logits_indices: torch.Tensor,  # [S]: rows of the batch whose logits are wanted
    ) -> torch.Tensor:  # [S, V] float32
        state = self.backend.prepare(meta, kv_cache.spec.block_size)
        hidden = self.embed_tokens(input_ids)  # [T, hidden]
        for i, layer in enumerate(self.layers):
            k_cache, v_cache = kv_cache.layer(i)
            residual = hidden
            hidden = layer.self_attn(
                positions, layer.input_layernorm(hidden), k_cache, v_cache, self.rope, self.backend, meta, state
            )
            hidden = residual + hidden
            residual = hidden
            hidden = residual + layer.mlp(layer.post_attention_layernorm(hidden))
        # Only sampled rows need the final norm and the (large) LM head.
        last = self.norm(hidden[logits_indices])  # [S, hidden]
        return F.linear(last, self.lm_head_weight()).float()
