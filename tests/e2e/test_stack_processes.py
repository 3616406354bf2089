"""The four services as separate processes (exactly as `llmserve up` starts them), one completion
streamed through all of them and checked against Hugging Face transformers' greedy output on the
same weights; then the public API's error handling and cancellation across process boundaries."""

from __future__ import annotations

import asyncio
import os
import tempfile

import aiohttp
import grpc
import pytest

from llmserve_stack.launch import StackConfig, free_port, service_specs
from llmserve.runtime.channel import open_channel
from llmserve_stack.supervisor import Stack
from llmserve.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, kvstore_pb2, kvstore_pb2_grpc

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PROMPT = "The capital of France is"
NUM_TOKENS = 32


@pytest.fixture(scope="module")
def hf_greedy_reference() -> list[int]:
    """Greedy continuation by transformers on the bundled SmolLM2 GGUF (dequantized, fp32)."""
    import torch
    from transformers import AutoModelForCausalLM

    from llmserve.model_source import load_tokenizer, resolve_model

    source = resolve_model("default")
    tokenizer = load_tokenizer(source)
    model = AutoModelForCausalLM.from_pretrained(source.folder, gguf_file=source.gguf_file, local_files_only=True,
                                                 dtype=torch.float32)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    generated: list[int] = []
    # A plain argmax loop: generate(min_new_tokens=...) would mask EOS, while the request below only
    # ignores EOS as a stop condition (EOS may still be the argmax and is then emitted).
    with torch.no_grad():
        for _ in range(NUM_TOKENS):
            next_id = int(model(ids).logits[0, -1].argmax())
            generated.append(next_id)
            ids = torch.cat([ids, torch.tensor([[next_id]])], dim=1)
    return generated


async def _collect(stub: gateway_pb2_grpc.GatewayStub, request: gateway_pb2.GenerateRequest) -> tuple[list[int], str, list]:
    tokens: list[int] = []
    text = ""
    chunks = []
    async for chunk in stub.Generate(request, timeout=120):
        tokens.extend(chunk.token_ids)
        text += chunk.text
        chunks.append(chunk)
    return tokens, text, chunks


def _rt_request(prompt: str, max_tokens: int, **kw: object) -> gateway_pb2.GenerateRequest:
    return gateway_pb2.GenerateRequest(
        text=prompt,
        sampling=common_pb2.SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True),
        slo=common_pb2.Slo(service_class=common_pb2.SERVICE_CLASS_REAL_TIME, ttft_ms=60_000, tpot_ms=10_000),
        **kw,
    )


async def test_four_processes_stream_the_greedy_reference(hf_greedy_reference: list[int]) -> None:
    # float32: the reference is transformers' float32 greedy output, token for token (bfloat16, the
    # CPU default where the hardware has it, is held to its stated bounds in test_smollm2_parity.py).
    http_port = free_port()
    config = StackConfig(port=0, http_port=http_port, num_workers=1, model="default", num_kv_blocks=256,
                         log_format="text", dtype="float32")
    specs = service_specs(config, ports={"gateway": free_port()})
    with tempfile.TemporaryDirectory() as log_dir:
        async with Stack(specs, log_dir=log_dir) as stack:
            gateway_addr = stack.specs[-1].address
            kvstore_addr = stack.specs[0].address
            assert {s.spec.name for s in stack.running} == {"kvstore", "worker-0", "scheduler", "gateway"}
            processes = [s.process for s in stack.running]
            pids = {p.pid for p in processes}
            assert len(pids) == 4 and os.getpid() not in pids
            async with open_channel(gateway_addr) as channel, open_channel(kvstore_addr) as kv_channel:
                stub = gateway_pb2_grpc.GatewayStub(channel)
                kv = kvstore_pb2_grpc.KvStoreStub(kv_channel)

                info = await stub.GetModelInfo(gateway_pb2.GetModelInfoRequest(), timeout=10)
                assert info.vocab_size == 49152 and info.num_workers == 1 and info.has_chat_template

                tokens, text, chunks = await _collect(stub, _rt_request(PROMPT, NUM_TOKENS))
                assert tokens == hf_greedy_reference
                assert "Paris" in text
                last = chunks[-1]
                assert last.finish_reason == common_pb2.FINISH_REASON_LENGTH
                assert last.usage.completion_tokens == NUM_TOKENS and last.usage.ttft_ms > 0

                # Bad input: a clear INVALID_ARGUMENT, and the stack keeps serving.
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await _collect(stub, gateway_pb2.GenerateRequest(text="", slo=common_pb2.Slo(
                        service_class=common_pb2.SERVICE_CLASS_BEST_EFFORT)))
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "prompt" in err.value.details()

                # A client that goes away mid-stream: its KV blocks come back within a step (to the
                # worker's reserve), and to the store once the idle worker gives its reserve back.
                stats = await kv.GetPoolStats(kvstore_pb2.GetPoolStatsRequest(worker_id="worker-0"), timeout=5)
                total = stats.num_blocks
                call = stub.Generate(_rt_request("Tell me a very long story about a dragon.", 400))
                seen = 0
                async for chunk in call:
                    seen += len(chunk.token_ids)
                    if seen >= 4:
                        break
                busy = await kv.GetPoolStats(kvstore_pb2.GetPoolStatsRequest(worker_id="worker-0"), timeout=5)
                assert busy.num_free < total
                call.cancel()
                for _ in range(100):
                    stats = await kv.GetPoolStats(kvstore_pb2.GetPoolStatsRequest(worker_id="worker-0"), timeout=5)
                    if stats.num_free == total:
                        break
                    await asyncio.sleep(0.05)
                assert stats.num_free == total and stats.num_leases == 0

                # The same greedy request again still matches (the cancelled one left nothing behind).
                tokens_again, _, _ = await _collect(stub, _rt_request(PROMPT, NUM_TOKENS))
                assert tokens_again == hf_greedy_reference

                # The OpenAI-compatible front of the same gateway: the same greedy text, and a
                # client that drops its SSE stream gives its KV blocks back too.
                async with aiohttp.ClientSession(f"http://127.0.0.1:{http_port}") as http:
                    body = {"prompt": PROMPT, "max_tokens": NUM_TOKENS, "temperature": 0, "ignore_eos": True}
                    async with http.post("/v1/completions", json=body) as response:
                        assert (await response.json())["choices"][0]["text"] == text
                    dropped = await http.post("/v1/completions", json={**body, "max_tokens": 400, "stream": True})
                    for _ in range(3):
                        await dropped.content.readline()
                    busy = await kv.GetPoolStats(kvstore_pb2.GetPoolStatsRequest(worker_id="worker-0"), timeout=5)
                    assert busy.num_free < total
                    dropped.close()
                for _ in range(100):
                    stats = await kv.GetPoolStats(kvstore_pb2.GetPoolStatsRequest(worker_id="worker-0"), timeout=5)
                    if stats.num_free == total:
                        break
                    await asyncio.sleep(0.05)
                assert stats.num_free == total and stats.num_leases == 0
        # Stack exited: every process is gone.
        assert all(p.poll() is not None for p in processes)
