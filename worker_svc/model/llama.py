"""Llama-family decoder (Llama, Qwen2, Mistral, SmolLM2) over flattened mixed batches.

The forward pass takes the tokens of every scheduled sequence flattened into one dimension T
(prefill chunks and decodes together), writes their K/V into the paged cache, attends through the
cache, and computes logits only for the rows that sample. Projections are fused (q/k/v into one
matrix, gate/up into one) so each layer runs two big matmuls instead of five. In bfloat16 on a CPU
they run prepacked oneDNN weights, with the residual adds and SiLU * up in the GEMM epilogues
(`linear.py`); elsewhere plain `F.linear`. With prepacked weights a step's rows are padded to one of
a fixed set of sizes (`row_buckets.py`: oneDNN builds and keeps a primitive per row count); the
padding rows pass through the linears and norms only, never into the KV cache or attention.
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
from worker_svc.model.row_buckets import RowBuckets


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
        hidden: torch.Tensor,  # [R, hidden]: the normed input, R >= T rows (T: meta's tokens, then padding)
        residual: torch.Tensor,  # [R, hidden]
        k_cache: torch.Tensor,  # [N, bs, Hkv, D]
        v_cache: torch.Tensor,
        backend: AttentionBackend,
        meta: AttentionMetadata,
        state: object,
    ) -> torch.Tensor:  # [R, hidden]: residual + attention output (padding rows: residual + o_proj(0))
        R, T = hidden.shape[0], meta.num_tokens
        q, k, v = self.qkv_proj(hidden).split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.view(R, self.num_heads, self.head_dim)  # [R, Hq, D]
        k = k.view(R, self.num_kv_heads, self.head_dim)  # [R, Hkv, D]
        v = v.view(R, self.num_kv_heads, self.head_dim)
        q, k = rope.rotate(q), rope.rotate(k)
        backend.write_kv(k[:T], v[:T].contiguous(), k_cache, v_cache, meta, state)
        out = backend.attend(q, k_cache, v_cache, meta, state, self.scale)  # [R, Hq, D], rows >= T unset
        if R > T:
            out[T:].zero_()  # finite padding rows: uninitialized memory may hold NaNs or denormals
        return self.o_proj.forward_add(out.view(R, self.q_size), residual)


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
        # Created uninitialized (the loader fills every parameter): nn.Embedding's own init, a
        # normal_ that on the meta device runs through torch._refs, imports torch._dynamo on first
        # use, 1.5-2.3 s of a worker's start (issue 11).
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size,
                                         _weight=torch.empty(config.vocab_size, config.hidden_size))
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        # Tied checkpoints (SmolLM2) reuse the embedding matrix as the LM head.
        self.lm_head = None if config.tie_word_embeddings else Linear(config.hidden_size, config.vocab_size, bias=False)
        self.rope = RotaryEmbedding(config, torch.device(device))
        self.tied_head_packed: torch.Tensor | None = None  # the embedding laid out as a prepacked LM head
        self.prepacked = False
        self.row_buckets: RowBuckets | None = None  # where set, the row counts every step is padded to

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
        self.prepacked = True
        return True

    def bucket_rows(self, max_rows: int) -> None:
        """Pads steps of up to `max_rows` tokens to the sizes of `RowBuckets.up_to(max_rows)` where
        the linears are prepacked (nothing elsewhere: F.linear builds no per-shape state)."""
        self.row_buckets = RowBuckets.up_to(max_rows) if self.prepacked else None

    @torch.inference_mode()
    def warm_row_buckets(self, max_head_rows: int) -> None:
        """Runs the linears at every padded size (and the LM head at those up to the size of
        `max_head_rows`), so that oneDNN builds all their primitives now, not while serving. One
        layer suffices: the layers share their weights' shapes, hence their primitives."""
        if self.row_buckets is None:
            return
        layer, config = self.layers[0], self.config
        head_rows = self.row_buckets.rows_for(max_head_rows)
        for rows in self.row_buckets.sizes:
            x = torch.zeros(rows, config.hidden_size, dtype=self.embed_tokens.weight.dtype, device=self.rope.cos.device)
            layer.self_attn.qkv_proj(x)
            layer.self_attn.o_proj.forward_add(x.new_zeros(rows, layer.self_attn.q_size), x)
            layer.mlp(x, x)
            if rows <= head_rows:
                self._lm_head(x)

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
        num_sampled = logits_indices.shape[0]
        if self.row_buckets is not None:  # padding: token 0 at position 0; sampled rows: row 0 again
            input_ids, positions, logits_indices = (
                F.pad(t, (0, self.row_buckets.rows_for(t.shape[0]) - t.shape[0]))
                for t in (input_ids, positions, logits_indices))
        hidden = self.embed_tokens(input_ids)  # [R, hidden]: R = T, or T and the padding rows
        rope = self.rope.tables(positions, hidden.dtype)  # once per step, not per layer
        for i, layer in enumerate(self.layers):
            k_cache, v_cache = kv_cache.layer(i)
            hidden = layer.self_attn(
                rope, layer.input_layernorm(hidden), hidden, k_cache, v_cache, self.backend, meta, state
            )
            hidden = layer.mlp(layer.post_attention_layernorm(hidden), hidden)
        # Only sampled rows need the final norm and the (large) LM head.
        last = self.norm(hidden[logits_indices])  # [S, hidden] (padded like the step)
        return self._lm_head(last)[:num_sampled].float()
