"""One request's output pipeline: token events in, client deltas out (detokenize, then hold back
possible stop strings, then account usage)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.core.detokenizer import IncrementalDetokenizer
from gateway.core.stop import StopStringMatcher
from gateway.core.tokenizer import Tokenizer
from gateway.core.types import Delta, FinishReason, PreparedRequest
from gateway.core.usage import UsageTracker


@dataclass(slots=True)
class OutputStream:
    """Feed it the scheduler's token events in order; each call returns the delta to send. Once a
    delta is `finished` (scheduler finish, stop string, cancel or failure) the stream is closed and
    later calls return empty finished deltas."""

    detokenizer: IncrementalDetokenizer
    stop: StopStringMatcher
    usage: UsageTracker
    finish_reason: FinishReason = FinishReason.NONE

    @classmethod
    def start(cls, request: PreparedRequest, tokenizer: Tokenizer, arrival_s: float) -> OutputStream:
        """`arrival_s` is the request's arrival on the same clock as the `now` values passed later."""
        return cls(
            detokenizer=IncrementalDetokenizer.for_prompt(tokenizer, request.prompt_token_ids),
            stop=StopStringMatcher(request.sampling.stop),
            usage=UsageTracker(arrival_s=arrival_s, slo=request.slo, prompt_tokens=len(request.prompt_token_ids)),
        )

    @property
    def finished(self) -> bool:
        return self.finish_reason != FinishReason.NONE

    def on_tokens(self, token_ids: Sequence[int], finish_reason: FinishReason, now: float, error_message: str = "") -> Delta:
        """One scheduler event: new tokens, and the scheduler's finish reason on the last one."""
        if self.finished:
            return Delta("", (), self.finish_reason)
        ids = tuple(token_ids)
        self.usage.on_tokens(len(ids), now)
        match = self.stop.feed(self.detokenizer.add(ids))
        text = match.text
        if not match.stopped and finish_reason != FinishReason.NONE:
            tail = self.stop.feed(self.detokenizer.flush())
            text += tail.text
            match.stopped = tail.stopped
            if not tail.stopped:
                text += self.stop.flush()
        if match.stopped:
            return self._finish(text, ids, FinishReason.STOP, now)
        if finish_reason != FinishReason.NONE:
            return self._finish(text, ids, finish_reason, now, error_message)
        return Delta(text, ids)

    def cancel(self, now: float) -> Delta:
        """The client cancelled: send what was held back and end with CANCELLED."""
        return self._end(FinishReason.CANCELLED, now)

    def fail(self, now: float, message: str) -> Delta:
        """The request failed upstream: end with ERROR."""
        return self._end(FinishReason.ERROR, now, message)

    def _end(self, reason: FinishReason, now: float, message: str = "") -> Delta:
        if self.finished:
            return Delta("", (), self.finish_reason)
        tail = self.stop.feed(self.detokenizer.flush())
        text = tail.text if tail.stopped else tail.text + self.stop.flush()
        return self._finish(text, (), reason, now, message)

    def _finish(self, text: str, ids: tuple[int, ...], reason: FinishReason, now: float, message: str = "") -> Delta:
        self.finish_reason = reason
        return Delta(text, ids, reason, self.usage.finish(reason, now), message)
