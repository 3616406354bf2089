"""Incremental detokenization: multi-byte characters split across tokens never leak U+FFFD, the
joined deltas equal a full decode, and leading spaces survive (tiny BPE and the real SmolLM2)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.core.detokenizer import IncrementalDetokenizer

TEXTS = [
    "héllo wörld, naïve café",
    "世界 你好 日本語",
    "emoji 🎉🚀 and text",
    " leading space and trailing space ",
    "mixed: déjà vu 🎉 世界!",
]


def stream(det: IncrementalDetokenizer, ids: list[int], chunk: int = 1) -> list[str]:
    deltas = [det.add(ids[i : i + chunk]) for i in range(0, len(ids), chunk)]
    return deltas + [det.flush()]


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_tiny_bpe_deltas_rebuild_text_without_replacement_chars(tiny_tokenizer: Any, text: str, chunk: int) -> None:
    ids = tiny_tokenizer.encode(text, add_special_tokens=False)
    deltas = stream(IncrementalDetokenizer(tiny_tokenizer), ids, chunk)
    assert "".join(deltas) == text
    assert not any("\ufffd" in d for d in deltas)


def test_naive_per_token_decoding_would_break_these_texts(tiny_tokenizer: Any) -> None:
    # Guards the test above: the texts really do split characters across tokens.
    ids = tiny_tokenizer.encode("世界 🎉", add_special_tokens=False)
    assert any("\ufffd" in tiny_tokenizer.decode([i]) for i in ids)


@pytest.mark.parametrize("text", TEXTS)
def test_smollm2_deltas_rebuild_text(smol_tokenizer: Any, text: str) -> None:
    prompt = smol_tokenizer.encode("Say something:")
    ids = smol_tokenizer.encode(text, add_special_tokens=False)
    det = IncrementalDetokenizer.for_prompt(smol_tokenizer, prompt)
    deltas = stream(det, ids)
    assert "".join(deltas) == text
    assert not any("\ufffd" in d for d in deltas)
    # Characters appear as soon as they are complete: an emoji of several tokens is one delta.
    if "🎉" in text:
        assert any("🎉" in d for d in deltas)


def test_smollm2_leading_space_after_prompt_is_kept(smol_tokenizer: Any) -> None:
    prompt = smol_tokenizer.encode("hello")
    ids = smol_tokenizer.encode(" world", add_special_tokens=False)
    det = IncrementalDetokenizer.for_prompt(smol_tokenizer, prompt)
    assert "".join(stream(det, ids)) == " world"


def test_special_tokens_are_not_in_the_text(smol_tokenizer: Any) -> None:
    eos = smol_tokenizer.convert_tokens_to_ids("<|im_end|>")
    ids = smol_tokenizer.encode("Done.", add_special_tokens=False) + [eos]
    assert "".join(stream(IncrementalDetokenizer(smol_tokenizer), ids)) == "Done."


def test_output_cut_inside_a_character_flushes_like_a_full_decode(tiny_tokenizer: Any) -> None:
    ids = tiny_tokenizer.encode("ok 🎉", add_special_tokens=False)[:-1]
    det = IncrementalDetokenizer(tiny_tokenizer)
    held = [det.add([i]) for i in ids]
    assert not any("\ufffd" in d for d in held)
    assert "".join(held) + det.flush() == tiny_tokenizer.decode(ids)


def test_prompt_ending_inside_a_character_is_not_used_as_context(tiny_tokenizer: Any) -> None:
    ids = tiny_tokenizer.encode("a 世界", add_special_tokens=False)
    prompt, output = ids[:-1], ids[-1:]
    det = IncrementalDetokenizer.for_prompt(tiny_tokenizer, prompt)
    assert det.tokens == []
    assert "".join(stream(det, output)) == tiny_tokenizer.decode(output)
