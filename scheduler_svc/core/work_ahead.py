"""What runs before a new real-time request's first token, as the core sees it when the request
arrives: the input of a policy's TTFT forecast (`Policy.forecast_first_token_s`, used by the opt-in
RT admission control of core/admission.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WorkAhead:
    # Prompt tokens still to compute of the requests the policy ranks ahead of the new one, plus
    # the new one's own prompt: its first token comes at the end of the last of them.
    prefill_tokens: int
    # Prompt tokens of the requests ranked behind it: chunked prefill fills the rest of the step
    # that completes its prompt with them, so that step lasts longer than its own share.
    prefill_behind: int
    # Running requests past their prompt: each step also carries one decode of each.
    decode_seqs: int
    # KV tokens those steps read (the running requests' computed tokens).
    kv_tokens: int
    # Tokens a step may compute (max_num_batched_tokens).
    token_budget: int
    # The tightest TPOT of the running real-time streams, seconds: the step guard keeps steps
    # within it once a stream is down to its slack (step_guard.py); inf without streams.
    step_time_cap_s: float = float("inf")
