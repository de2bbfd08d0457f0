"""The sample corpus: the Python standard library's own docstrings, read without importing anything.

Each stdlib ``.py`` file (sorted, tests and site-packages excluded) is parsed with ``ast``; every
module, class and function docstring long enough to be prose becomes one document. No network,
no third-party text, and the same interpreter always yields the same bytes.
"""

from __future__ import annotations

import ast
import json
import os
import re
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Folders that hold tests, vendored third-party code or installed packages, not the library itself.
EXCLUDED_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__", "ensurepip", "venv"}
MIN_CHARS = 40


@dataclass(frozen=True)
class Docstring:
    qualname: str  # e.g. "json.decoder.JSONDecoder.decode"
    kind: str  # "module" | "class" | "function"
    text: str


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_sources(root: Path) -> Iterator[tuple[str, Path]]:
    """(dotted module name, path) for every stdlib source file, in sorted path order."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in EXCLUDED_DIRS and not d.startswith("."))
        rel = Path(dirpath).relative_to(root)
        for name in sorted(filenames):
            if not name.endswith(".py") or name.startswith("test_"):
                continue
            parts = [*rel.parts, name[:-3]]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if parts:
                yield ".".join(parts), Path(dirpath) / name


def docstrings_of(module: str, source: str) -> Iterator[Docstring]:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return
    doc = ast.get_docstring(tree, clean=True)
    if doc:
        yield Docstring(module, "module", doc)

    def walk(node: ast.AST, prefix: str) -> Iterator[Docstring]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}.{child.name}"
                text = ast.get_docstring(child, clean=True)
                if text:
                    yield Docstring(name, "class" if isinstance(child, ast.ClassDef) else "function", text)
                yield from walk(child, name)

    yield from walk(tree, module)


def stdlib_docstrings(root: Path | None = None) -> Iterator[Docstring]:
    seen: set[str] = set()
    for module, path in stdlib_sources(root or stdlib_dir()):
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        for doc in docstrings_of(module, source):
            # Identical docstrings (overloads, platform variants) would only repeat a document.
            if len(doc.text) >= MIN_CHARS and doc.text not in seen:
                seen.add(doc.text)
                yield doc


_SENTENCE_END = re.compile(r"(?<=[.!?])\s")


def first_sentence(text: str) -> str:
    paragraph = " ".join(text.split("\n\n", 1)[0].split())
    return _SENTENCE_END.split(paragraph, 1)[0]


def pretrain_lines(docs: list[Docstring]) -> Iterator[str]:
    for doc in docs:
        yield json.dumps({"text": doc.text}, ensure_ascii=False)


def alpaca_lines(docs: list[Docstring]) -> Iterator[str]:
    """An instruction sample from the same docstrings: "summarize X" -> the docstring's first sentence."""
    for doc in docs:
        answer = first_sentence(doc.text)
        if len(answer) < 20:
            continue
        row = {
            "instruction": f"Summarize the purpose of the Python {doc.kind} `{doc.qualname}` in one sentence.",
            "input": "",
            "output": answer,
        }
        yield json.dumps(row, ensure_ascii=False)
