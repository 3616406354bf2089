"""Protobuf <-> the shared vocabulary (`llmserve.types`), for the messages more than one service
converts: sampling parameters (common.proto) and step timings (worker.proto). Each service's own
convert.py uses these; the field names are the same on both sides by design."""

from __future__ import annotations

import dataclasses

from llmserve.types import SamplingParams, StepTiming
from llmserve.v1 import common_pb2, worker_pb2

_TIMING_FIELDS = tuple(f.name for f in dataclasses.fields(StepTiming))


def sampling_from_proto(sampling: common_pb2.SamplingParams) -> SamplingParams:
    """Unset temperature / top_p take their documented neutral values; an unset seed stays None
    (a worker derives one from the request id). Nothing is validated: that is the gateway's."""
    return SamplingParams(
        max_tokens=sampling.max_tokens,
        temperature=sampling.temperature if sampling.HasField("temperature") else 1.0,
        top_p=sampling.top_p if sampling.HasField("top_p") else 1.0,
        top_k=sampling.top_k,
        seed=sampling.seed if sampling.HasField("seed") else None,
        stop_token_ids=tuple(sampling.stop_token_ids),
        ignore_eos=sampling.ignore_eos,
    )


def sampling_to_proto(sampling: SamplingParams) -> common_pb2.SamplingParams:
    message = common_pb2.SamplingParams(
        max_tokens=sampling.max_tokens, temperature=sampling.temperature, top_p=sampling.top_p,
        top_k=sampling.top_k, stop_token_ids=sampling.stop_token_ids, ignore_eos=sampling.ignore_eos,
    )
    if sampling.seed is not None:
        message.seed = sampling.seed
    return message


def timing_from_proto(timing: worker_pb2.StepTiming) -> StepTiming:
    return StepTiming(**{name: getattr(timing, name) for name in _TIMING_FIELDS})


def timing_to_proto(timing: StepTiming) -> worker_pb2.StepTiming:
    return worker_pb2.StepTiming(**{name: getattr(timing, name) for name in _TIMING_FIELDS})
