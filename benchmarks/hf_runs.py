"""Hugging Face transformers on the same model and prompts: static batching (`generate` on the
left-padded batch of all `streams` prompts; one prompt at a time for 1 stream) in float32 and in
bfloat16 (bf16 is ~2x float32 for transformers on a CPU with native bf16), and optionally its
continuous-batching API (`generate_batch`)."""

from __future__ import annotations

import sys
import time
from typing import Any

from bench_common import Row, load1, make_row

HF_STATIC = "transformers static batching"


def load_hf(model: str, load_format: str) -> tuple[Any, Any]:
    """(float32 model, tokenizer) of the llmserve model source, offline."""
    import torch
    from transformers import AutoModelForCausalLM

    from llmserve.model_source import load_hf_config, load_tokenizer, resolve_model

    source = resolve_model(model, load_format)  # type: ignore[arg-type]
    tokenizer = load_tokenizer(source)
    if source.load_format == "dummy":  # same architecture and FLOPs, random weights
        torch.manual_seed(0)
        net = AutoModelForCausalLM.from_config(load_hf_config(source), dtype=torch.float32)
    else:
        kwargs = {"gguf_file": source.gguf_file} if source.gguf_file else {}
        net = AutoModelForCausalLM.from_pretrained(source.folder, local_files_only=True, dtype=torch.float32, **kwargs)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return net.eval(), tokenizer


class HfStaticRunner:
    def __init__(self, net: Any, tokenizer: Any, dtype_name: str, max_tokens: int) -> None:
        self.net = net
        self.tokenizer = tokenizer
        self.name = f"{HF_STATIC} {dtype_name}"
        self.max_tokens = max_tokens

    def _generate(self, batch: Any, new_tokens: int) -> Any:
        import torch

        with torch.inference_mode():
            return self.net.generate(**batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                     pad_token_id=self.tokenizer.pad_token_id)

    def _batch(self, prompts: list[str], streams: int) -> tuple[float, float, float, int]:
        """(TTFT s, TPOT s, wall s, output tokens) of one static batch; TTFT is a one-token
        generate of the same batch (transformers has no streaming timer of its own)."""
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True)
        start = time.perf_counter()
        self._generate(batch, 1)
        ttft = time.perf_counter() - start
        start = time.perf_counter()
        out = self._generate(batch, self.max_tokens)
        wall = time.perf_counter() - start
        tokens = (out.shape[1] - batch.input_ids.shape[1]) * len(prompts)
        return ttft, (wall - ttft) / max(1, self.max_tokens - 1), wall, tokens

    def warm_up(self) -> None:
        self._generate(self.tokenizer(["Warm up."], return_tensors="pt"), 4)

    def run(self, prompts: list[str], streams: int) -> Row:
        groups = [[p] for p in prompts] if streams == 1 else [prompts]
        runs = [self._batch(g, streams) for g in groups]
        # One static batch: every request's first token comes with the batch's first step.
        ttfts = [r[0] * 1000 for r, g in zip(runs, groups) for _ in g]
        tpots = [r[1] * 1000 for r, g in zip(runs, groups) for _ in g]
        return make_row(self.name, streams, ttfts, tpots, sum(r[2] for r in runs), sum(r[3] for r in runs))

    def time_to_first_token(self, prompt_ids: list[int]) -> float:
        import torch

        ids = torch.tensor([prompt_ids])
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        start = time.perf_counter()
        self._generate(batch, 1)
        return time.perf_counter() - start


def run_generate_batch(net: Any, tokenizer: Any, prompts: list[str], max_tokens: int) -> Row | None:
    """transformers' continuous batching (`generate_batch`), where this version has it."""
    if not hasattr(net, "generate_batch"):
        return None
    import torch
    from transformers import GenerationConfig

    try:
        config = GenerationConfig(max_new_tokens=max_tokens, min_new_tokens=max_tokens, do_sample=False,
                                  eos_token_id=-1, pad_token_id=tokenizer.pad_token_id)
        inputs = [tokenizer(p).input_ids for p in prompts]
        with torch.no_grad():  # generate_batch fails under inference_mode
            start = time.perf_counter()
            outputs = net.generate_batch(inputs=inputs, generation_config=config)
            wall = time.perf_counter() - start
    except Exception as err:  # report, don't fail the whole benchmark
        print(f"transformers generate_batch failed: {err!r}", file=sys.stderr)
        return None
    tokens = sum(len(o.generated_tokens) for o in outputs.values())
    return Row("transformers generate_batch (continuous batching)", len(prompts), tokens / wall, None, None, None, None,
               wall, tokens, load1())
