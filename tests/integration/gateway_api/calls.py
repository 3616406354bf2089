"""The stack, requests and readings of responses that the gateway API tests share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.client import GatewayClient, build_request
from llmserve.runtime.server import ServiceServer
from llmserve.v1 import common_pb2, gateway_pb2
from tests.integration.inprocess import Backend

LENGTH, STOP, CANCELLED = common_pb2.FINISH_REASON_LENGTH, common_pb2.FINISH_REASON_STOP, common_pb2.FINISH_REASON_CANCELLED


async def collect(client: GatewayClient, prompt: Any, **options: Any) -> list[gateway_pb2.GenerateResponse]:
    return [r async for r in client.generate(prompt, **options)]


def text_of(responses: list[gateway_pb2.GenerateResponse]) -> str:
    return "".join(r.text for r in responses)


def ids_of(responses: list[gateway_pb2.GenerateResponse]) -> list[int]:
    return [t for r in responses for t in r.token_ids]



def req(**kw: Any) -> gateway_pb2.GenerateRequest:
    return build_request(kw.pop("prompt", "Hello"), **{"service_class": "best_effort", **kw})


@dataclass
class Stack:
    gateway: ServiceServer
    backend: Backend
    vocab_size: int
    max_context: int

    @property
    def address(self) -> str:
        return self.gateway.address

    @property
    def scheduler(self) -> ServiceServer:
        return self.backend.scheduler

    @property
    def tokenizer(self) -> Any:
        return self.backend.tokenizer

    async def idle(self) -> bool:
        """Whether the scheduler holds no request within 5 s."""
        return await self.backend.idle()
