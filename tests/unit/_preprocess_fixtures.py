"""Shared by the preprocess / sample tests: a tokenizer trained here, and texts to feed it."""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path

from llm.sample.bpe_tokenizer import save_tokenizer, train_tokenizer
from llm.sample.corpus import stdlib_docstrings


@functools.lru_cache(maxsize=1)
def docstring_texts() -> tuple[str, ...]:
    return tuple(d.text for d in stdlib_docstrings())


@functools.lru_cache(maxsize=1)
def tokenizer_dir() -> Path:
    """The tiny recipe's tokenizer (byte-level BPE, Qwen2 rules, vocab 2048), trained once per test session."""
    out = Path(tempfile.mkdtemp(prefix="npubox-test-tokenizer-"))
    save_tokenizer(train_tokenizer(docstring_texts()[:3000], 2048), out, model_max_length=512)
    return out


def write_jsonl(path: Path, rows) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row, ensure_ascii=False)) + "\n")
    return path
