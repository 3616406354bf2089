"""Turns a client's GenerateInput into a PreparedRequest, in two cheap phases around the one
expensive one, so that a shell can run tokenization off its event loop:

    checked = check_request(inp, ...)           # every field, before any text is looked at twice
    prompt  = tokenize(tokenizer, inp, ...)     # the slow part (chat template, tokenizer)
    request = finish_request(checked, prompt, ...)  # prompt against the model; id and seed

`prepare_request` runs the three in a row (tests, in-process use)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from gateway.core.chat import tokenize_messages, tokenize_prompt
from gateway.core.tokenizer import Tokenizer
from gateway.core.types import GenerateInput, ModelLimits, PreparedRequest, Sampling, Slo
from gateway.core.validate import (
    check_prompt_bytes,
    check_prompt_ids,
    check_prompt_present,
    check_request_id,
    check_tenant,
    validate_sampling,
    validate_slo,
    validate_workflow,
)


@dataclass(frozen=True)
class CheckedRequest:
    """A request whose fields passed every check that needs no tokenizer."""

    inp: GenerateInput
    sampling: Sampling
    slo: Slo

    @property
    def prompt_field(self) -> str:
        inp = self.inp
        return "text" if inp.text is not None else "messages" if inp.messages is not None else "token_ids"


def check_request(
    inp: GenerateInput,
    limits: ModelLimits,
    *,
    default_slo: Slo,
    max_prompt_bytes: int,
    new_seed: Callable[[], int],
) -> CheckedRequest:
    """Raises InvalidRequestError on the first bad field; the prompt's size is checked first."""
    check_prompt_bytes(inp, max_prompt_bytes)
    check_request_id(inp.request_id)
    check_prompt_present(inp)
    if inp.token_ids is not None and len(inp.token_ids) >= limits.max_context_length:
        check_prompt_ids(inp.token_ids, 0, limits, "token_ids")  # too long: says so before any other work
    slo = validate_slo(inp.slo, default_slo)
    sampling = validate_sampling(inp.sampling, limits.vocab_size, new_seed)
    validate_workflow(inp.workflow)
    check_tenant(inp.tenant)
    return CheckedRequest(inp, sampling, slo)


def tokenize(tokenizer: Tokenizer, inp: GenerateInput, model_name: str) -> list[int]:
    """The prompt's token ids (text through the tokenizer, messages through the chat template)."""
    if inp.messages is not None:
        return tokenize_messages(tokenizer, inp.messages, model_name)
    if inp.text is not None:
        return tokenize_prompt(tokenizer, inp.text, inp.apply_chat_template, model_name)
    return list(inp.token_ids or ())


def finish_request(
    checked: CheckedRequest, prompt: list[int], limits: ModelLimits, *, request_id: str, arrival_unix_s: float
) -> PreparedRequest:
    """Checks the tokenized prompt against the model; an unset max_tokens of a chat request
    (`fill_context`) becomes the room the prompt leaves."""
    sampling = checked.sampling
    if checked.inp.sampling.fill_context and checked.inp.sampling.max_tokens == 0:
        sampling = replace(sampling, max_tokens=max(1, limits.max_context_length - len(prompt)))
    check_prompt_ids(prompt, sampling.max_tokens, limits, checked.prompt_field)
    return PreparedRequest(
        request_id=request_id,
        prompt_token_ids=tuple(prompt),
        sampling=sampling,
        slo=checked.slo,
        tenant=checked.inp.tenant,
        workflow=checked.inp.workflow,
        arrival_unix_s=arrival_unix_s,
    )


def prepare_request(
    inp: GenerateInput,
    tokenizer: Tokenizer,
    limits: ModelLimits,
    *,
    new_request_id: Callable[[], str],
    new_seed: Callable[[], int],
    arrival_unix_s: float,
    default_slo: Slo,
    max_prompt_bytes: int,
) -> PreparedRequest:
    """All three phases in a row; raises InvalidRequestError on the first bad field."""
    checked = check_request(inp, limits, default_slo=default_slo, max_prompt_bytes=max_prompt_bytes, new_seed=new_seed)
    prompt = tokenize(tokenizer, inp, limits.model_name)
    return finish_request(checked, prompt, limits, request_id=inp.request_id or new_request_id(),
                          arrival_unix_s=arrival_unix_s)
