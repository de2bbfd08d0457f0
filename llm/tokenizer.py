"""The tokenizer of a Hugging Face model directory, as preprocess and eval use it.

One loader, one rule for the end-of-document token: the ``eos_token`` of ``tokenizer_config.json`` (what
`python -m llm sample` writes and what transformers reads), else the first of the usual EOS spellings in the
vocabulary. Preprocess encodes with the Rust ``tokenizers.Tokenizer`` (``encode_batch``); eval encodes with
transformers' ``AutoTokenizer`` of the same directory (:meth:`LoadedTokenizer.transformers`), which adds the
model's special tokens (BOS for Llama) as lm-evaluation-harness does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from llm.errors import NpuboxError

EOD_CANDIDATES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>")


@dataclass
class LoadedTokenizer:
    tokenizer: object  # tokenizers.Tokenizer
    vocab_size: int  # with added tokens: what Megatron's HF tokenizer reports as vocab_size
    eod_id: int | None
    pad_id: int | None
    source: Path
    _transformers: object = field(default=None, repr=False)

    def transformers(self):
        """transformers' tokenizer of the same directory (loaded once), whose ``encode`` adds the model's special
        tokens (BOS for Llama)."""
        if self._transformers is None:
            self._transformers = _auto_tokenizer(self.source)
        return self._transformers


def _token_name(value) -> str | None:
    if isinstance(value, dict):  # {"content": "<|endoftext|>", ...} in older configs
        value = value.get("content")
    return value if isinstance(value, str) else None


def load_tokenizer(directory: Path) -> LoadedTokenizer:
    from tokenizers import Tokenizer

    directory = Path(directory)
    if not directory.is_dir():
        raise NpuboxError(f"tokenizer directory {directory} does not exist")
    path = directory / "tokenizer.json"
    auto = None  # transformers' tokenizer, when one was built to get the Rust one
    if path.is_file():
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises plain Exception on a bad file
            raise NpuboxError(f"{path} is not a tokenizers file ({e})") from e
    else:
        tok, auto = _from_transformers(directory)

    config = {}
    config_path = directory / "tokenizer_config.json"
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise NpuboxError(f"{config_path} is not valid JSON ({e})") from e

    def token_id(name: str | None) -> int | None:
        return tok.token_to_id(name) if name else None

    eod = token_id(_token_name(config.get("eos_token")))
    if eod is None:
        eod = next((i for i in map(tok.token_to_id, EOD_CANDIDATES) if i is not None), None)
    pad = token_id(_token_name(config.get("pad_token")))
    return LoadedTokenizer(
        tok, tok.get_vocab_size(with_added_tokens=True), eod, pad if pad is not None else eod, directory, auto
    )


def _auto_tokenizer(directory: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(directory)
    except (OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise NpuboxError(
            f"tokenizer {directory}: cannot be loaded ({first}); "
            "expected a directory with tokenizer.json / tokenizer_config.json"
        ) from None


def _from_transformers(directory: Path):
    """A directory without tokenizer.json (vocab/merges, sentencepiece): let transformers build the fast one.
    Returns its Rust tokenizer and transformers' tokenizer itself (kept for :meth:`LoadedTokenizer.transformers`)."""
    try:
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        backend = getattr(hf, "backend_tokenizer", None)
    except Exception as e:
        raise NpuboxError(
            f"tokenizer directory {directory} has no tokenizer.json and transformers cannot load one from it ({e})"
        ) from e
    if backend is None:
        raise NpuboxError(f"tokenizer directory {directory}: expected tokenizer.json or a fast (Rust) tokenizer")
    return backend, hf
