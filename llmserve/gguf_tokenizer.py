"""The tokenizer (and chat template) of a GGUF checkpoint, built without torch.

transformers reads GGUF metadata in a module that imports torch (`integrations/gguf/reader.py`),
so `AutoTokenizer.from_pretrained(..., gguf_file=...)` needs torch even for the tokenizer. The
gateway only needs the tokenizer, and its image carries no torch: the metadata is read here with the
`gguf` package (numpy only) and handed to the same converter transformers uses
(`convert_gguf_tokenizer`), following `get_gguf_tokenizer` (transformers 5). A test checks that
the result encodes, decodes and renders the chat template exactly as transformers' own loader does.
Import it lazily (`llmserve.model_source.load_tokenizer` does, under its import lock).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gguf import GGUFReader
from transformers import TokenizersBackend
from transformers.integrations.gguf import GGUF_TOKENIZER_MAPPING, convert_gguf_tokenizer

# The special tokens a GGUF names by id (tokenizer.ggml.<key>), as transformers maps them.
_SPECIAL_TOKEN_IDS = {
    "bos_token": "bos_token_id",
    "eos_token": "eos_token_id",
    "unk_token": "unknown_token_id",
    "pad_token": "padding_token_id",
}


def load_gguf_tokenizer(path: Path) -> Any:
    """A transformers `TokenizersBackend` for the GGUF file at `path`, offline."""
    fields = GGUFReader(path).fields
    metadata = {name: field.contents() for name, field in fields.items()
                if name.startswith("tokenizer.") or name == "general.architecture"}
    grouped = {
        group: {name: metadata[f"tokenizer.{key}"] for key, name in renames.items() if f"tokenizer.{key}" in metadata}
        for group, renames in GGUF_TOKENIZER_MAPPING.items()
    }
    tokenizer_dict, tokenizer_config = grouped["tokenizer"], grouped["tokenizer_config"]
    if tokenizer_dict.get("tokenizer_type") == "llama":
        # As transformers: llama.cpp adds BOS to a sentencepiece vocabulary that does not say otherwise.
        tokenizer_config.setdefault("add_bos_token", True)
    for name, key in _SPECIAL_TOKEN_IDS.items():
        token_id = metadata.get(f"tokenizer.ggml.{key}")
        tokenizer_config[name] = tokenizer_dict["tokens"][token_id] if token_id is not None else None
    backend, extra = convert_gguf_tokenizer(metadata["general.architecture"], tokenizer_dict)
    return TokenizersBackend(tokenizer_object=backend, name_or_path=str(path), **tokenizer_config, **extra)
