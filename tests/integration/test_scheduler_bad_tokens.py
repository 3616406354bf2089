"""Token ids outside the model's vocabulary, sent straight to the scheduler's Submit (an internal
client that skipped the gateway's checks), through real servers on 127.0.0.1:0 (the KV store, a
worker on a tiny random Llama, the scheduler): INVALID_ARGUMENT naming the vocabulary, before
anything is planned, and a request in flight beside it gets exactly Hugging Face's greedy tokens
(before the check, every plan that carried the bad request failed at the worker, its healthy
neighbours' steps included, for ever)."""

from __future__ import annotations

import asyncio

import grpc
import pytest
import torch

from llmserve.runtime.channel import open_channel
from llmserve.v1 import scheduler_pb2_grpc
from scheduler_svc.config import SchedulerServiceConfig
from scheduler_svc.server import start_scheduler
from tests.integration.test_checkpoint_resume import RT, Stack, _submit, hf_greedy, stack

__all__ = ["stack"]  # the fixture, from the checkpoint tests


async def test_a_token_outside_the_vocabulary_is_invalid_argument_and_others_are_served(stack: Stack) -> None:
    scheduler = await start_scheduler(SchedulerServiceConfig(
        worker_addrs=(stack.workers[0].address,), kvstore_addr=stack.kvstore.address, policy="bros"))
    vocab = stack.workers[0].service.description.vocab_size
    try:
        prompt = torch.randint(3, 96, (12,), generator=torch.Generator().manual_seed(5)).tolist()
        async with open_channel(scheduler.address) as channel:
            stub = scheduler_pb2_grpc.SchedulerStub(channel)
            good = asyncio.create_task(_submit(stub, "good", prompt, 8, RT))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await _submit(stub, "bad", prompt[:5] + [vocab + 3], 8, RT)
            tokens, _ = await good
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"token id {vocab + 3}, outside the model's vocabulary [0, {vocab})" in err.value.details()
        assert tokens == hf_greedy(stack.hf, prompt, 8)
        assert scheduler.service.links[0].stats.num_failed_steps == 0
    finally:
        await scheduler.stop(0.5)
