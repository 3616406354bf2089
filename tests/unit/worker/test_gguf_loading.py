"""A GGUF is read without transformers (llmserve.gguf_file, ModelConfig.from_gguf,
loader.gguf_hf_weights) into exactly what transformers' own GGUF loader gives: the same config as
`AutoConfig.from_pretrained(..., gguf_file=...)` (the bundled SmolLM2 and small written files of
each supported family) and, bit for bit, the tensors `load_gguf_checkpoint` hands its model. The
bundled model's weights against transformers' are in test_smollm2_parity.py (slow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter
from gguf.quants import quantize

from llmserve.gguf_file import GgufArray, GgufError, GgufFile
from llmserve.model_source import ModelSource, default_gguf_path, load_hf_config
from worker_svc.model.config import ModelConfig
from worker_svc.model.loader import gguf_hf_name, gguf_hf_weights

# A small GQA model: 4 query heads of 16, 2 KV heads; rows of 64 and 96 are whole quant blocks (32).
HIDDEN, HEADS, KV_HEADS, HEAD_DIM, FFN, VOCAB, LAYERS = 64, 4, 2, 16, 96, 128, 2


def write_gguf(path: Path, arch: str = "llama", *, name: str = "tiny", untied: bool = False, biases: bool = False,
               quantized: bool = True, drop: tuple[str, ...] = (), extra: dict[str, object] | None = None,
               vocab_size_key: bool = True, seed: int = 0) -> Path:
    """A GGUF as llama.cpp's converter lays one out (metadata, tensor names), random weights; the
    projections Q8_0 and Q4_1 where `quantized`, the norms F32, some F16."""
    rng = np.random.default_rng(seed)
    writer = GGUFWriter(str(path), arch)
    writer.add_name(name)
    meta = {"block_count": LAYERS, "context_length": 512, "embedding_length": HIDDEN, "feed_forward_length": FFN,
            "attention.head_count": HEADS, "attention.head_count_kv": KV_HEADS, "rope.freq_base": 5000.0,
            "attention.layer_norm_rms_epsilon": 1e-5, "rope.dimension_count": HEAD_DIM}
    if vocab_size_key:
        meta["vocab_size"] = VOCAB
    meta |= extra or {}
    for key, value in meta.items():
        if key in drop:
            continue
        if isinstance(value, float):
            writer.add_float32(f"{arch}.{key}", value)
        elif isinstance(value, str):
            writer.add_string(f"{arch}.{key}", value)
        else:
            writer.add_uint32(f"{arch}.{key}", int(value))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"t{i}" for i in range(VOCAB)])
    writer.add_eos_token_id(3)
    writer.add_bos_token_id(1)

    def tensor(gguf_name: str, shape: tuple[int, ...], qtype: GGMLQuantizationType) -> None:
        data = rng.standard_normal(shape).astype(np.float32) * 0.1
        if qtype == GGMLQuantizationType.F32:
            writer.add_tensor(gguf_name, data)
        elif qtype == GGMLQuantizationType.F16:
            writer.add_tensor(gguf_name, data.astype(np.float16))
        else:
            writer.add_tensor(gguf_name, quantize(data, qtype), raw_dtype=qtype)

    q8, q4 = ((GGMLQuantizationType.Q8_0, GGMLQuantizationType.Q4_1) if quantized
              else (GGMLQuantizationType.F16, GGMLQuantizationType.F32))
    tensor("token_embd.weight", (VOCAB, HIDDEN), q8)
    for i in range(LAYERS):
        tensor(f"blk.{i}.attn_norm.weight", (HIDDEN,), GGMLQuantizationType.F32)
        tensor(f"blk.{i}.attn_q.weight", (HEADS * HEAD_DIM, HIDDEN), q4)
        tensor(f"blk.{i}.attn_k.weight", (KV_HEADS * HEAD_DIM, HIDDEN), q4)
        tensor(f"blk.{i}.attn_v.weight", (KV_HEADS * HEAD_DIM, HIDDEN), q8)
        if biases:
            tensor(f"blk.{i}.attn_q.bias", (HEADS * HEAD_DIM,), GGMLQuantizationType.F32)
            tensor(f"blk.{i}.attn_k.bias", (KV_HEADS * HEAD_DIM,), GGMLQuantizationType.F32)
            tensor(f"blk.{i}.attn_v.bias", (KV_HEADS * HEAD_DIM,), GGMLQuantizationType.F32)
        tensor(f"blk.{i}.attn_output.weight", (HIDDEN, HEADS * HEAD_DIM), q4)
        tensor(f"blk.{i}.ffn_norm.weight", (HIDDEN,), GGMLQuantizationType.F32)
        tensor(f"blk.{i}.ffn_gate.weight", (FFN, HIDDEN), q4)
        tensor(f"blk.{i}.ffn_up.weight", (FFN, HIDDEN), q8)
        tensor(f"blk.{i}.ffn_down.weight", (HIDDEN, FFN), q4)
    tensor("output_norm.weight", (HIDDEN,), GGMLQuantizationType.F32)
    if untied:
        tensor("output.weight", (VOCAB, HIDDEN), q8)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _source(path: Path) -> ModelSource:
    return ModelSource(path.stem, path.parent, path.name, "gguf", None)


def _transformers_config(path: Path) -> ModelConfig:
    return ModelConfig.from_hf(load_hf_config(_source(path)))


# --- the file reader ---

def test_reads_the_bundled_file_as_gguf_reader_does() -> None:
    path = default_gguf_path()
    ours, reference = GgufFile(path), GGUFReader(path)
    for key, field in reference.fields.items():
        if key.startswith("GGUF."):
            continue
        value = ours.metadata[key]
        assert (value.values() if isinstance(value, GgufArray) else value) == field.contents(), key
    assert len(ours.metadata["tokenizer.ggml.tokens"]) == 49152
    assert list(ours.tensors) == [t.name for t in reference.tensors]
    assert ours.data_offset == reference.data_offset
    for tensor in reference.tensors:
        data = ours.tensor_data(tensor.name)
        assert ours.tensors[tensor.name].ggml_type == tensor.tensor_type
        assert data.dtype == tensor.data.dtype and data.shape == tensor.data.shape, tensor.name
        assert np.array_equal(data, tensor.data), tensor.name


def test_not_a_gguf_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGML" + bytes(60))
    with pytest.raises(GgufError, match="not a GGUF file"):
        GgufFile(bad)
    good = write_gguf(tmp_path / "good.gguf")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(good.read_bytes()[:200])
    with pytest.raises(GgufError, match="truncated|past the end"):
        GgufFile(cut)
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(GgufError):
        GgufFile(empty)


# --- the config: as transformers' AutoConfig reads it ---

def test_bundled_config_is_autoconfigs() -> None:
    path = default_gguf_path()
    config = ModelConfig.from_gguf(GgufFile(path))
    assert config == _transformers_config(path)
    assert (config.num_layers, config.num_heads, config.num_kv_heads, config.head_dim) == (30, 9, 3, 64)
    assert config.tie_word_embeddings and config.eos_token_ids == (2,) and config.max_model_len == 8192


@pytest.mark.parametrize("case", [
    {"arch": "llama"},
    {"arch": "llama", "untied": True},
    {"arch": "llama", "vocab_size_key": False},  # the vocabulary size from the token list
    {"arch": "llama", "drop": ("attention.head_count_kv", "rope.freq_base", "rope.dimension_count")},
    {"arch": "llama", "name": "mistral"},  # transformers' Mistral (its 4096 sliding window)
    {"arch": "qwen2", "biases": True},
])
def test_written_configs_are_autoconfigs(tmp_path: Path, case: dict) -> None:
    path = write_gguf(tmp_path / "m.gguf", **case)
    assert ModelConfig.from_gguf(GgufFile(path)) == _transformers_config(path)


@pytest.mark.parametrize("missing", ["block_count", "embedding_length", "attention.head_count",
                                     "attention.layer_norm_rms_epsilon", "context_length"])
def test_a_missing_field_is_named(tmp_path: Path, missing: str) -> None:
    path = write_gguf(tmp_path / "m.gguf", drop=(missing,))
    with pytest.raises(ValueError, match=f"llama.{missing}"):
        ModelConfig.from_gguf(GgufFile(path))


def test_what_the_model_code_cannot_serve_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="RoPE scaling"):
        ModelConfig.from_gguf(GgufFile(write_gguf(tmp_path / "a.gguf", extra={"rope.scaling.type": "yarn"})))
    with pytest.raises(ValueError, match="architecture 'gemma2' is not supported"):
        ModelConfig.from_gguf(GgufFile(write_gguf(tmp_path / "b.gguf", arch="gemma2")))
    writer = GGUFWriter(str(tmp_path / "c.gguf"), "llama")  # no vocab_size and no token list
    for key, value in {"block_count": 1, "context_length": 8, "embedding_length": 8, "feed_forward_length": 8,
                       "attention.head_count": 1}.items():
        writer.add_uint32(f"llama.{key}", value)
    writer.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match="vocabulary size"):
        ModelConfig.from_gguf(GgufFile(tmp_path / "c.gguf"))


# --- the weights: bit for bit what transformers' GGUF loader hands its model ---

@pytest.mark.parametrize("case", [{"arch": "llama"}, {"arch": "llama", "untied": True, "quantized": False},
                                  {"arch": "qwen2", "biases": True}])
def test_weights_are_transformers_own(tmp_path: Path, case: dict) -> None:
    from transformers import AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    path = write_gguf(tmp_path / "m.gguf", **case)
    hf_model = AutoModelForCausalLM.from_config(load_hf_config(_source(path)))
    expected = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=hf_model)["tensors"]
    gguf = GgufFile(path)
    ours = dict(gguf_hf_weights(gguf, ModelConfig.from_gguf(gguf)))
    assert sorted(ours) == sorted(expected)
    for name, tensor in ours.items():
        assert tensor.dtype == torch.float32 == expected[name].dtype, name
        assert torch.equal(tensor, expected[name]), name


def test_an_unknown_tensor_is_named() -> None:
    assert gguf_hf_name("blk.7.attn_k.bias") == "model.layers.7.self_attn.k_proj.bias"
    assert gguf_hf_name("output.weight") == "lm_head.weight"
    with pytest.raises(ValueError, match="blk.0.ffn_gate_exps.weight"):
        gguf_hf_name("blk.0.ffn_gate_exps.weight")
