"""The per-request output pipeline over a real tokenizer: stop strings across token boundaries,
finish reasons, usage on the last delta only."""

from __future__ import annotations

from typing import Any

from gateway.core.stream import OutputStream
from gateway.core.types import Delta, FinishReason, PreparedRequest, Sampling, ServiceClass, Slo


def request(tokenizer: Any, stop: tuple[str, ...] = ()) -> PreparedRequest:
    sampling = Sampling(max_tokens=64, temperature=0.0, top_p=1.0, top_k=0, seed=1, stop=stop, stop_token_ids=(), ignore_eos=False)
    prompt = tuple(tokenizer.encode("User: hi\nAssistant:"))
    return PreparedRequest("r1", prompt, sampling, Slo(ServiceClass.BEST_EFFORT), "", None, 0.0)


def feed(out: OutputStream, ids: list[int], last: FinishReason = FinishReason.LENGTH) -> list[Delta]:
    deltas: list[Delta] = []
    for i, token in enumerate(ids):
        d = out.on_tokens([token], last if i == len(ids) - 1 else FinishReason.NONE, now=1.0 + i * 0.01)
        deltas.append(d)
        if d.finished:
            break
    return deltas


def test_stop_string_across_tokens_ends_with_stop_and_is_not_sent(tiny_tokenizer: Any) -> None:
    ids = tiny_tokenizer.encode(" The end. ### Answer: 42", add_special_tokens=False)
    out = OutputStream.start(request(tiny_tokenizer, stop=("###",)), tiny_tokenizer, arrival_s=0.99)
    deltas = feed(out, ids)
    assert "".join(d.text for d in deltas) == " The end. "
    assert deltas[-1].finish_reason == FinishReason.STOP
    assert len(deltas) < len(ids)  # ended early, before the remaining tokens
    assert deltas[-1].usage is not None and deltas[-1].usage.completion_tokens == len(deltas)
    assert all(d.usage is None for d in deltas[:-1])


def test_multibyte_stop_string_split_inside_characters(tiny_tokenizer: Any) -> None:
    ids = tiny_tokenizer.encode("ok 世界 more", add_special_tokens=False)
    out = OutputStream.start(request(tiny_tokenizer, stop=("界",)), tiny_tokenizer, arrival_s=0.0)
    deltas = feed(out, ids)
    assert "".join(d.text for d in deltas) == "ok 世"
    assert deltas[-1].finish_reason == FinishReason.STOP


def test_scheduler_finish_flushes_held_text(tiny_tokenizer: Any) -> None:
    ids = tiny_tokenizer.encode("hello ##", add_special_tokens=False)
    out = OutputStream.start(request(tiny_tokenizer, stop=("###",)), tiny_tokenizer, arrival_s=0.0)
    deltas = feed(out, ids, last=FinishReason.LENGTH)
    assert "".join(d.text for d in deltas) == "hello ##"
    assert deltas[-1].finish_reason == FinishReason.LENGTH
    assert [t for d in deltas for t in d.token_ids] == ids


def test_stop_completed_by_the_final_event_still_stops(tiny_tokenizer: Any) -> None:
    ids = tiny_tokenizer.encode("x ###", add_special_tokens=False)
    out = OutputStream.start(request(tiny_tokenizer, stop=("###",)), tiny_tokenizer, arrival_s=0.0)
    deltas = feed(out, ids, last=FinishReason.LENGTH)
    assert deltas[-1].finish_reason == FinishReason.STOP
    assert "".join(d.text for d in deltas) == "x "


def test_cancel_sends_held_text_and_closes(tiny_tokenizer: Any) -> None:
    out = OutputStream.start(request(tiny_tokenizer, stop=("###",)), tiny_tokenizer, arrival_s=0.0)
    first = out.on_tokens(tiny_tokenizer.encode("a #", add_special_tokens=False), FinishReason.NONE, now=0.1)
    last = out.cancel(now=0.2)
    assert first.text + last.text == "a #"
    assert last.finish_reason == FinishReason.CANCELLED and last.usage is not None
    assert not last.usage.slo_attained
    assert out.on_tokens([1], FinishReason.NONE, now=0.3) == Delta("", (), FinishReason.CANCELLED)


def test_fail_carries_the_message(tiny_tokenizer: Any) -> None:
    out = OutputStream.start(request(tiny_tokenizer), tiny_tokenizer, arrival_s=0.0)
    d = out.fail(now=0.1, message="worker lost")
    assert (d.finish_reason, d.error_message) == (FinishReason.ERROR, "worker lost")
