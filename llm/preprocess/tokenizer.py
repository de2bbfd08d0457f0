"""Load the tokenizer of a Hugging Face model directory as a `tokenizers.Tokenizer` (the Rust fast path)."""

from __future__ import annotations

import json
from dataclasses import dataclass
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
    if path.is_file():
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises plain Exception on a bad file
            raise NpuboxError(f"{path} is not a tokenizers file ({e})") from e
    else:
        tok = _from_transformers(directory)

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
    return LoadedTokenizer(tok, tok.get_vocab_size(with_added_tokens=True), eod, pad if pad is not None else eod, directory)


def _from_transformers(directory: Path):
    """A directory without tokenizer.json (vocab/merges, sentencepiece): let transformers build the fast one."""
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
    return backend
