"""SmolLM2-135M from the bundled GGUF: our model, loaded as the worker loads it (its own GGUF
reader, no transformers: `load_model`), against Hugging Face transformers' model of the same file
in float32. The weights our reader dequantizes are transformers' bit for bit. Logits within 2e-3 absolute (float32, 30 layers;
observed ~1e-4) for full prefill, chunked prefill and paged decode; 32 greedy tokens identical.

bfloat16 (the CPU default where the hardware has bf16 instructions), against the same float32
reference, teacher-forced along transformers' greedy continuation (up to 32 tokens) of each of the
five parity prompts: max logit error 2.5 and mean 0.25 (logits span about ±40; observed at most
1.54 and 0.13 on an AVX512-BF16 CPU, the size of transformers' own bfloat16 model's error against
its float32 one: 1.9 and 0.15 on the benchmark prompts); greedy tokens agree wherever float32's
top-1 leads its top-2 by more than 0.5 (the observed disagreements were all near-ties, margins
0.02-0.09), and on at least 90% of the positions (observed 152/158, 96%).
Loading the GGUF takes ~15 s, so one module-scoped fixture loads it once."""

from __future__ import annotations

import pytest
import torch

from llmserve.gguf_file import GgufFile
from llmserve.model_source import load_hf_config, resolve_model
from tests.unit.worker.helpers import LocalBlockPool, PagedSeq, make_runner, paged_cache, paged_forward, run_step
from llmserve.plan import BatchPlan, NewRequest, ScheduledRequest
from llmserve.types import SamplingParams, ServiceClass
from worker_svc.kernels.backend import make_backend
from worker_svc.model.config import ModelConfig
from worker_svc.model.loader import gguf_hf_weights, load_model

pytestmark = pytest.mark.slow
ATOL = 2e-3


@pytest.fixture(scope="module")
def smollm2():
    from transformers import AutoModelForCausalLM

    source = resolve_model("default")
    hf = AutoModelForCausalLM.from_pretrained(
        source.folder, gguf_file=source.gguf_file, local_files_only=True, dtype=torch.float32
    ).eval()
    ours = load_model(source, make_backend("torch"))  # float32, the worker's own GGUF path
    # One thread: on a shared 2-core machine spinning OpenMP threads make these forwards ~5x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield hf, ours
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def smollm2_bf16(smollm2):
    return load_model(resolve_model("default"), make_backend("torch"), torch.bfloat16)  # the worker's CPU default


# "Once upon a time, in a small village by the sea, there lived an old fisherman who" (SmolLM2 tokenizer)
PROMPT = [6403, 1980, 253, 655, 28, 281, 253, 1165, 6560, 411, 260, 3426, 28, 665, 4161, 354, 1573, 43663, 617]


def _hf_logits(hf, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return hf(torch.tensor([ids])).logits[0].float()


def _step(runner, pool, step, new, rid, n, computed, sample):
    return run_step(runner, pool, BatchPlan(step, tuple(new), (ScheduledRequest(rid, n, computed, sample),)))


def test_config_is_read_from_the_gguf(smollm2) -> None:
    _, ours = smollm2
    cfg = ours.config
    assert (cfg.num_layers, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim) == (30, 9, 3, 64)
    assert cfg.tie_word_embeddings and ours.lm_head is None and cfg.rope_theta == 100000.0
    assert cfg == ModelConfig.from_hf(load_hf_config(resolve_model("default")))  # transformers' AutoConfig


def test_gguf_weights_are_transformers_own_bit_for_bit(smollm2) -> None:
    hf, _ = smollm2
    source = resolve_model("default")
    gguf = GgufFile(source.folder / source.gguf_file)
    expected = hf.state_dict()
    ours = dict(gguf_hf_weights(gguf, ModelConfig.from_gguf(gguf)))
    assert sorted(ours) == sorted(set(expected) - {"lm_head.weight"})  # tied: the embedding is the head
    for name, tensor in ours.items():
        assert torch.equal(tensor, expected[name]), name


def test_full_and_chunked_prefill_logits(smollm2) -> None:
    hf, ours = smollm2
    expected = _hf_logits(hf, PROMPT)
    kv, free = paged_cache(ours, 32)
    full = paged_forward(ours, kv, [PagedSeq(PROMPT, free)], [len(PROMPT)])
    torch.testing.assert_close(full, expected, atol=ATOL, rtol=0)
    seq = PagedSeq(PROMPT, free)
    chunked = torch.cat([paged_forward(ours, kv, [seq], [n]) for n in (7, 10, 2)])
    torch.testing.assert_close(chunked, expected, atol=ATOL, rtol=0)


def test_greedy_32_tokens_and_decode_logits(smollm2) -> None:
    hf, ours = smollm2
    ids = list(PROMPT)
    with torch.no_grad():
        hf_out = hf.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False)
    expected = hf_out[0, len(ids):].tolist()
    assert len(expected) == 32  # no end-of-sequence within 32 tokens for this prompt
    runner, pool = make_runner(ours, num_blocks=32, block_size=16), LocalBlockPool(32)
    new = NewRequest("r", tuple(ids), len(ids), SamplingParams(max_tokens=16, temperature=0.0), ServiceClass.REAL_TIME)
    got = [_step(runner, pool, 0, [new], "r", len(ids), 0, True).sampled[0][1]]
    for i in range(31):
        got.append(_step(runner, pool, i + 1, [], "r", 1, len(ids) + i, True).sampled[0][1])
    assert got == expected
    # Decode logits of the paged path against HF's at a few positions.
    kv, free = paged_cache(ours, 32)
    seq = PagedSeq(ids + got, free)
    paged_forward(ours, kv, [seq], [len(ids)])
    reference = _hf_logits(hf, ids + got)
    for i in range(8):
        row = paged_forward(ours, kv, [seq], [1])[0]
        torch.testing.assert_close(row, reference[len(ids) + i], atol=ATOL, rtol=0)


BF16_MAX_ERROR, BF16_MEAN_ERROR, BF16_DECISIVE_MARGIN, BF16_MIN_AGREEMENT = 2.5, 0.25, 0.5, 0.90
# The parity prompts: the story above (PROMPT) and these.
BF16_TEXTS = ("The capital of France is", "Photosynthesis is the process by which plants",
              "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n", "The three laws of motion are")


def test_bfloat16_logits_and_greedy_tokens_within_the_stated_bounds(smollm2, smollm2_bf16) -> None:
    from llmserve.model_source import load_tokenizer

    hf, _ = smollm2
    tokenizer = load_tokenizer(resolve_model("default"))
    agree = positions = 0
    prompts = {"story": PROMPT} | {text: list(tokenizer(text).input_ids) for text in BF16_TEXTS}
    for name, ids in prompts.items():
        with torch.no_grad():
            continuation = hf.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False)[0, len(ids):].tolist()
        reference = _hf_logits(hf, ids + continuation)  # [P + N, V] float32
        kv, free = paged_cache(smollm2_bf16, 32)
        seq = PagedSeq(ids + continuation, free)
        rows = [paged_forward(smollm2_bf16, kv, [seq], [len(ids)])]
        rows += [paged_forward(smollm2_bf16, kv, [seq], [1]) for _ in continuation[:-1]]
        got = torch.cat(rows)  # prompt rows, then one decode row per continuation token
        error = (got - reference[: got.shape[0]]).abs()
        assert float(error.max()) <= BF16_MAX_ERROR, f"{name}: max logit error {float(error.max()):.3f}"
        assert float(error.mean()) <= BF16_MEAN_ERROR, f"{name}: mean logit error {float(error.mean()):.3f}"
        generated = slice(len(ids) - 1, got.shape[0])  # rows whose argmax is a greedy token
        top2 = reference[generated].topk(2, dim=-1).values
        decisive = top2[:, 0] - top2[:, 1] > BF16_DECISIVE_MARGIN
        same = got[generated].argmax(-1) == reference[generated].argmax(-1)
        assert bool(same[decisive].all()), f"{name}: a greedy token differs where float32 is decisive"
        agree, positions = agree + int(same.sum()), positions + same.numel()
    assert agree >= BF16_MIN_AGREEMENT * positions, f"greedy agreement {agree}/{positions}"
