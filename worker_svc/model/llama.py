"""Llama-family decoder (Llama, Qwen2, Mistral, SmolLM2) over flattened mixed batches.

The forward pass takes the tokens of every scheduled sequence flattened into one dimension T
(prefill chunks and decodes together), writes their K/V into the paged cache, attends through the
cache, and computes logits only for the rows that sample. Projections are fused (q/k/v into one
matrix, gate/up into one) so each layer runs two big matmuls instead of five. In bfloat16 on a CPU
they run prepacked oneDNN weights, with the residual adds and SiLU * up in the GEMM epilogues
(`linear.py`); elsewhere plain `F.linear`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from worker_svc.kernels.backend import AttentionBackend
from worker_svc.model.config import ModelConfig
from worker_svc.model.kv_cache import KvCache
from worker_svc.model.linear import GateUpLinear, Linear, check_packed, pack_weight, packed_linear, prepack_supported
from worker_svc.model.metadata import AttentionMetadata
from worker_svc.model.rope import RopeTables, RotaryEmbedding


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
        self.qkv_proj = Linear(config.hidden_size, self.q_size + 2 * self.kv_size, bias=config.qkv_bias)
        self.o_proj = Linear(self.q_size, config.hidden_size, bias=False)

    def forward(
        self,
        rope: RopeTables,
        hidden: torch.Tensor,  # [T, hidden]: the normed input
        residual: torch.Tensor,  # [T, hidden]
        k_cache: torch.Tensor,  # [N, bs, Hkv, D]
        v_cache: torch.Tensor,
        backend: AttentionBackend,
        meta: AttentionMetadata,
        state: object,
    ) -> torch.Tensor:  # [T, hidden]: residual + attention output
        T = hidden.shape[0]
        q, k, v = self.qkv_proj(hidden).split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.view(T, self.num_heads, self.head_dim)  # [T, Hq, D]
        k = k.view(T, self.num_kv_heads, self.head_dim)  # [T, Hkv, D]
        v = v.view(T, self.num_kv_heads, self.head_dim)
        q, k = rope.rotate(q), rope.rotate(k)
        backend.write_kv(k, v.contiguous(), k_cache, v_cache, meta, state)
        out = backend.attend(q, k_cache, v_cache, meta, state, self.scale)  # [T, Hq, D]
        return self.o_proj.forward_add(out.view(T, self.q_size), residual)


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.intermediate_size = config.intermediate_size
        self.gate_up_proj = GateUpLinear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.down_proj = Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:  # [T, hidden] x2 → [T, hidden]
        """`residual + down(silu(gate(x)) * up(x))`."""
        return self.down_proj.forward_add(self.gate_up_proj.silu_mul(x), residual)


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
        self.lm_head = None if config.tie_word_embeddings else Linear(config.hidden_size, config.vocab_size, bias=False)
        self.rope = RotaryEmbedding(config, torch.device(device))
        self.tied_head_packed: torch.Tensor | None = None  # the embedding laid out as a prepacked LM head

    def lm_head_weight(self) -> torch.Tensor:  # [V, hidden]
        return self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight

    @torch.no_grad()
    def prepack_linears(self) -> bool:
        """Lays every projection and the LM head out for oneDNN once the weights are loaded (see
        `linear.py`); returns False, changing nothing, where that path is absent or fails its check."""
        head = self.lm_head_weight()
        if not prepack_supported(head.dtype, head.device):
            return False
        packed_head = pack_weight(head)
        if not check_packed(head, packed_head):
            return False
        for module in self.modules():
            if isinstance(module, Linear):
                module.prepack()
        if self.lm_head is None:
            self.tied_head_packed = packed_head
        return True

    def _lm_head(self, x: torch.Tensor) -> torch.Tensor:  # [S, hidden] → [S, V]
        if self.lm_head is not None:
            return self.lm_head(x)
        if self.tied_head_packed is not None:
            return packed_linear(x, self.tied_head_packed, None)
        return F.linear(x, self.embed_tokens.weight)

    @torch.inference_mode()
    def forward(
        self,
        input_ids: torch.Tensor,  # [T]
        positions: torch.Tensor,  # [T]
        meta: AttentionMetadata,
        kv_cache: KvCache,
        logits_indices: torch.Tensor,  # [S]: rows of the batch whose logits are wanted
    ) -> torch.Tensor:  # [S, V] float32
        state = self.backend.prepare(meta, kv_cache.spec.block_size, kv_cache.spec.layer_bytes_per_token)
        hidden = self.embed_tokens(input_ids)  # [T, hidden]
        rope = self.rope.tables(positions, hidden.dtype)  # once per step, not per layer
        for i, layer in enumerate(self.layers):
            k_cache, v_cache = kv_cache.layer(i)
            hidden = layer.self_attn(
                rope, layer.input_layernorm(hidden), hidden, k_cache, v_cache, self.backend, meta, state
            )
            hidden = layer.mlp(layer.post_attention_layernorm(hidden), hidden)
        # Only sampled rows need the final norm and the (large) LM head.
        last = self.norm(hidden[logits_indices])  # [S, hidden]
        return self._lm_head(last).float()
