"""`python -m llm sample`: a deterministic stdlib-docstring corpus and a Qwen2-style byte-level BPE tokenizer."""

from __future__ import annotations

import hashlib
import importlib.machinery
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from llm.errors import NpuboxError
from llm.sample import main
from llm.sample.bpe_tokenizer import QWEN2_SPLIT_REGEX
from llm.sample.corpus import stdlib_dir, stdlib_sources

REPO = Path(__file__).resolve().parents[2]


def digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    ws = tmp_path_factory.mktemp("ws")
    env = {"NPUBOX_WORKSPACE": str(ws), "PATH": "/usr/bin:/bin", "HOME": str(ws), "PYTHONDONTWRITEBYTECODE": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "llm", "sample", "--model", "tiny"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    return ws, env


def test_rerun_writes_identical_bytes(workspace):
    ws, env = workspace
    first = digests(ws)
    assert {
        "data/raw/sample.jsonl",
        "data/raw/sample_alpaca.jsonl",
        "models/tiny/hf/tokenizer.json",
        "models/tiny/hf/tokenizer_config.json",
    } <= set(first)
    subprocess.run(
        [sys.executable, "-m", "llm", "sample", "--model", "tiny"], cwd=REPO, env=env, check=True, capture_output=True
    )
    assert digests(ws) == first


def test_corpus_is_stdlib_docstrings(workspace):
    ws, _ = workspace
    rows = [json.loads(line) for line in (ws / "data" / "raw" / "sample.jsonl").read_text().splitlines()]
    assert len(rows) > 5000 and all(set(r) == {"text"} and r["text"].strip() for r in rows)
    alpaca = [json.loads(line) for line in (ws / "data" / "raw" / "sample_alpaca.jsonl").read_text().splitlines()]
    assert len(alpaca) > 5000
    assert alpaca[0]["instruction"].startswith("Summarize the purpose of the Python module")
    assert all(r["output"] and r["input"] == "" for r in alpaca)
    sources = [path for _, path in stdlib_sources(stdlib_dir())]
    assert sources and all("site-packages" not in p.parts and "test" not in p.parts for p in sources)


def test_tokenizer_is_qwen2_style_and_loads_with_autotokenizer(workspace):
    from transformers import AutoTokenizer

    ws, _ = workspace
    hf_dir = ws / "models" / "tiny" / "hf"
    spec = json.loads((hf_dir / "tokenizer.json").read_text())
    split, byte_level = spec["pre_tokenizer"]["pretokenizers"]
    assert split["type"] == "Split" and split["pattern"]["Regex"] == QWEN2_SPLIT_REGEX
    assert byte_level["type"] == "ByteLevel" and byte_level["add_prefix_space"] is False
    assert spec["model"]["type"] == "BPE" and spec["normalizer"]["type"] == "NFC"

    tok = AutoTokenizer.from_pretrained(str(hf_dir))
    assert len(tok) == 2048
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token == "<|endoftext|>"
    for special in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        assert len(tok(special)["input_ids"]) == 1
    text = "def f(x):\n    return x ** 2  # naïve façade, 12345 ✓"
    assert tok.decode(tok(text)["input_ids"]) == text
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert chat == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_weights_hook_writes_into_the_same_directory(tmp_path, monkeypatch):
    calls = []

    def write_sample_weights(recipe, hf_dir, seed):
        calls.append((recipe.name, seed))
        (Path(hf_dir) / "config.json").write_text("{}")

    fake = types.ModuleType("llm.sample.weights")
    fake.__spec__ = importlib.machinery.ModuleSpec("llm.sample.weights", None)
    fake.write_sample_weights = write_sample_weights
    monkeypatch.setitem(sys.modules, "llm.sample.weights", fake)
    monkeypatch.setenv("NPUBOX_WORKSPACE", str(tmp_path))
    assert main(["--model", "tiny"]) == 0
    assert calls == [("tiny", 0)]
    assert sorted(p.name for p in (tmp_path / "models" / "tiny" / "hf").iterdir()) == [
        "config.json",
        "merges.txt",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.json",
    ]


def test_special_tokens_take_qwen2s_fixed_ids_and_text_keeps_its_tokens():
    """tiny-qwen2's tokenizer: <|endoftext|> 151643, <|im_start|> 151644, <|im_end|> 151645 (the ids MindFormers'
    Qwen2Tokenizer hard-codes); the trained tokens keep their ids from 0 and encode text as before."""
    from llm.sample.bpe_tokenizer import SPECIAL_TOKENS, train_tokenizer, with_special_ids_from

    texts = ["Return the path of a file.", "Open the file and read its lines."] * 50
    trained = train_tokenizer(texts, 300)
    moved = with_special_ids_from(trained, 151643)
    assert [moved.token_to_id(t) for t in SPECIAL_TOKENS] == [151643, 151644, 151645]
    assert moved.get_vocab_size() == 151646
    text = "Open the path of a file."
    shift = len(SPECIAL_TOKENS)  # the trained tokenizer put the special tokens first
    assert moved.encode(text).ids == [i - shift for i in trained.encode(text).ids]
    assert moved.decode(moved.encode(text).ids) == text
    assert moved.encode("<|im_start|>user").ids[0] == 151644


def test_recipe_without_sample_tokenizer_is_refused():
    with pytest.raises(NpuboxError, match="origin"):
        main(["--model", "qwen25-7b"])
