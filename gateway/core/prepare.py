"""Turns a client's GenerateInput into a PreparedRequest: checks every field, assigns the id and
seed when unset, tokenizes (chat template included) and checks the prompt against the model."""

from __future__ import annotations

from collections.abc import Callable

from gateway.core.chat import tokenize_prompt
from gateway.core.tokenizer import Tokenizer
from gateway.core.types import GenerateInput, ModelLimits, PreparedRequest
from gateway.core.validate import (
    check_prompt_ids,
    check_prompt_present,
    check_request_id,
    check_tenant,
    validate_sampling,
    validate_slo,
    validate_workflow,
)


def prepare_request(
    inp: GenerateInput,
    tokenizer: Tokenizer,
    limits: ModelLimits,
    *,
    new_request_id: Callable[[], str],
    new_seed: Callable[[], int],
    arrival_unix_s: float,
) -> PreparedRequest:
    """Raises InvalidRequestError on the first bad field (cheap checks before tokenizing)."""
    check_request_id(inp.request_id)
    check_prompt_present(inp)
    slo = validate_slo(inp.slo)
    sampling = validate_sampling(inp.sampling, limits.vocab_size, new_seed)
    validate_workflow(inp.workflow)
    check_tenant(inp.tenant)
    if inp.text is not None:
        prompt = tokenize_prompt(tokenizer, inp.text, inp.apply_chat_template, limits.model_name)
        field = "text"
    else:
        prompt = list(inp.token_ids or ())
        field = "token_ids"
    check_prompt_ids(prompt, sampling.max_tokens, limits, field)
    return PreparedRequest(
        request_id=inp.request_id or new_request_id(),
        prompt_token_ids=tuple(prompt),
        sampling=sampling,
        slo=slo,
        tenant=inp.tenant,
        workflow=inp.workflow,
        arrival_unix_s=arrival_unix_s,
    )
