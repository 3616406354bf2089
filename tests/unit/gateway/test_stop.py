"""Stop strings: held back while they may be starting, cut (not returned) when complete, found
across delta and token boundaries."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.stop import StopStringMatcher


def run(stops: tuple[str, ...], pieces: list[str]) -> tuple[list[str], bool]:
    m = StopStringMatcher(stops)
    out: list[str] = []
    for piece in pieces:
        r = m.feed(piece)
        out.append(r.text)
        if r.stopped:
            return out, True
    out.append(m.flush())
    return out, False


def test_stop_inside_one_delta_is_cut() -> None:
    assert run(("STOP",), ["Hello STOP world"]) == (["Hello "], True)


def test_stop_split_across_deltas_is_never_partly_sent() -> None:
    out, stopped = run(("STOP",), ["Hel", "lo ST", "O", "P and more"])
    assert stopped
    assert out == ["Hel", "lo ", "", ""]


def test_false_start_is_released() -> None:
    out, stopped = run(("STOP",), ["a ST", "ART b"])
    assert not stopped
    assert out == ["a ", "START b", ""]


def test_held_text_is_flushed_at_the_end() -> None:
    assert run(("STOP",), ["end ST"]) == (["end ", "ST"], False)


def test_earliest_of_several_stops_wins() -> None:
    assert run(("world", "lo"), ["hello world"]) == (["hel"], True)


def test_overlapping_prefix() -> None:
    out, stopped = run(("aab",), list("aaab"))
    assert stopped and "".join(out) == "a"


def test_no_stops_passes_everything_through() -> None:
    assert run((), ["a", "b"]) == (["a", "b", ""], False)


def test_after_a_stop_nothing_more_is_sent() -> None:
    m = StopStringMatcher(("x",))
    assert m.feed("ax").stopped
    assert m.feed("more").text == ""
    assert m.flush() == ""


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet="abc世", max_size=30),
    stops=st.lists(st.text(alphabet="abc世", min_size=1, max_size=4), min_size=1, max_size=3),
    cuts=st.lists(st.integers(min_value=0, max_value=30), max_size=8),
)
def test_matches_a_whole_text_search_for_any_split(text: str, stops: list[str], cuts: list[int]) -> None:
    bounds = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    pieces = [text[a:b] for a, b in zip(bounds, bounds[1:])]
    out, stopped = run(tuple(stops), pieces)
    # The stop string that ends first wins (ties: the one that starts first).
    hits = [(i + len(s), i) for s, i in ((s, text.find(s)) for s in stops) if i >= 0]
    assert stopped == bool(hits)
    assert "".join(out) == (text[: min(hits)[1]] if hits else text)
