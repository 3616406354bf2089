"""Benchmark prompts: real user requests from the ShareGPT-derived length statistics are not text,
so the throughput benchmark uses a fixed, varied set of instruction prompts (same for every engine)."""

from __future__ import annotations

TOPICS = [
    "how a bicycle gear system works", "the history of the printing press", "why the sky is blue",
    "how to make sourdough bread", "the rules of chess for a beginner", "what a compiler does",
    "how vaccines train the immune system", "the water cycle", "how to write a good cover letter",
    "what causes the seasons on Earth", "how a refrigerator keeps food cold", "the basics of photosynthesis",
    "how airplanes stay in the air", "what inflation means for savings", "how to plant tomatoes",
    "the life cycle of a star", "how the internet routes a message", "why cats purr",
    "how to train for a first 10k run", "what a database index is", "the causes of the French Revolution",
    "how solar panels produce electricity", "how to brew coffee with a French press", "what DNA does",
    "how earthquakes happen", "the difference between weather and climate", "how a bill becomes law",
    "how to care for a houseplant", "what machine learning is", "how bees make honey",
    "the main ideas of stoic philosophy", "how a car engine works",
]


def benchmark_prompts(n: int) -> list[str]:
    """`n` distinct prompts (cycled with a numbered variant past the topic list)."""
    prompts = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        suffix = "" if i < len(TOPICS) else f" (variant {i // len(TOPICS)})"
        prompts.append(f"Explain {topic} in a few clear paragraphs{suffix}.")
    return prompts


def long_prompt_ids(tokenize, num_tokens: int) -> list[int]:  # type: ignore[no-untyped-def]
    """A prompt of exactly `num_tokens` token ids (the benchmark prompts joined and cut), for
    prefill throughput; `tokenize(text) -> list[int]`."""
    text = " ".join(benchmark_prompts(len(TOPICS)))
    ids: list[int] = []
    while len(ids) < num_tokens:
        ids += tokenize(text)
    return ids[:num_tokens]
