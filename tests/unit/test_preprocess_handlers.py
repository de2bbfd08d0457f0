"""Instruction handlers: Qwen chat template, prompt labels -100, truncation and packing to --seq-length."""

from __future__ import annotations

import numpy as np
import pytest

from _preprocess_fixtures import tokenizer_dir, write_jsonl
from llm.preprocess import main


def read(prefix, name):
    """(ids back to back, lengths) of PREFIX_packed_<name>_document, read from our own .idx/.bin layout."""
    idx = (prefix.parent / f"{prefix.name}_packed_{name}_document.idx").read_bytes()
    n = int(np.frombuffer(idx, np.uint64, 1, 18)[0])
    lengths = np.frombuffer(idx, np.int32, n, 34)
    ids = np.fromfile(prefix.parent / f"{prefix.name}_packed_{name}_document.bin", dtype=np.int32)
    return np.split(ids, np.cumsum(lengths)[:-1])


def tokenize(text):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tokenizer_dir() / "tokenizer.json")).encode(text, add_special_tokens=False).ids


def run(tmp_path, rows, handler, *extra):
    write_jsonl(tmp_path / "in.jsonl", rows)
    prefix = tmp_path / "out"
    assert (
        main(
            [
                "--input",
                str(tmp_path / "in.jsonl"),
                "--tokenizer",
                str(tokenizer_dir()),
                "--output-prefix",
                str(prefix),
                "--handler",
                handler,
                "--quiet",
                *extra,
            ]
        )
        == 0
    )
    return prefix


def test_sharegpt_multi_turn_learns_only_the_assistant_turns(tmp_path):
    row = {
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "What is a dict?"},
            {"from": "gpt", "value": "A mapping."},
            {"from": "human", "value": "And a list?"},
            {"from": "gpt", "value": "A sequence."},
        ]
    }
    prefix = run(tmp_path, [row], "sharegpt")
    [ids], [mask], [labels] = (read(prefix, k) for k in ("input_ids", "attention_mask", "labels"))
    p1 = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is a dict?<|im_end|>\n<|im_start|>assistant\n"
    a1 = "A mapping.<|im_end|>\n"
    p2 = "<|im_start|>user\nAnd a list?<|im_end|>\n<|im_start|>assistant\n"
    a2 = "A sequence.<|im_end|>\n"
    parts = [(tokenize(p1), False), (tokenize(a1), True), (tokenize(p2), False), (tokenize(a2), True)]
    assert ids.tolist() == sum((p for p, _ in parts), [])
    assert labels.tolist() == sum((p if learned else [-100] * len(p) for p, learned in parts), [])
    assert mask.tolist() == [1] * len(ids)


def test_sharegpt_bad_conversations_are_skipped(tmp_path, capsys):
    rows = [
        {"conversations": [{"from": "human", "value": "hi"}]},  # no answer
        {"conversations": "not a list"},
        {"other": 1},
        {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
    ]
    run(tmp_path, rows, "sharegpt")
    out = capsys.readouterr().out
    assert "conversation turns do not alternate human, gpt, ..., ending with gpt: in.jsonl line 1" in out
    assert "'conversations' is not a non-empty list: in.jsonl line 2" in out
    assert "missing key 'conversations': in.jsonl line 3" in out


def test_alpaca_packing_fills_exact_sequences_with_padding_masked(tmp_path, capsys):
    rows = [{"instruction": f"Say {i}.", "input": "", "output": "word " * (i % 7 + 1)} for i in range(40)]
    rows.append({"instruction": "Long one.", "input": "", "output": "many words " * 200})  # truncated
    rows.append({"instruction": "prompt " * 300, "input": "", "output": "x"})  # prompt alone too long
    prefix = run(tmp_path, rows, "alpaca", "--seq-length", "128")
    ids, mask, labels = (read(prefix, k) for k in ("input_ids", "attention_mask", "labels"))
    assert len(ids) == len(mask) == len(labels) >= 2
    assert all(len(x) == 128 for x in ids + mask + labels)
    eod = tokenize("<|endoftext|>")[0]
    for seq, m, lab in zip(ids, mask, labels):
        real = int(m.sum())
        assert (m[:real] == 1).all() and (m[real:] == 0).all()
        assert (seq[real:] == eod).all() and (lab[real:] == -100).all()
        assert (lab[:real] != -100).any()
    starts = sum(int((seq == tokenize("<|im_start|>")[0]).sum()) for seq in ids)
    assert starts == 3 * 41  # system, user, assistant per kept sample
    out = capsys.readouterr().out
    assert "truncated to --seq-length: 1" in out
    assert "prompt fills all of --seq-length 128: in.jsonl line 42" in out


def test_alpaca_no_pack_truncates_only(tmp_path):
    rows = [{"instruction": "Short.", "input": "ctx", "output": "ok"}, {"instruction": "Long.", "output": "w " * 500}]
    prefix = run(tmp_path, rows, "alpaca", "--seq-length", "64", "--no-pack")
    ids = read(prefix, "input_ids")
    assert len(ids[0]) < 64 and len(ids[1]) == 64
    full = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nShort.\nctx<|im_end|>\n"
    assert ids[0].tolist() == tokenize(full + "<|im_start|>assistant\n") + tokenize("ok<|im_end|>\n")


@pytest.mark.parametrize("handler", ["alpaca", "sharegpt"])
def test_instruction_outputs_share_lengths(tmp_path, handler):
    row = (
        {"instruction": "Q?", "input": "", "output": "A."}
        if handler == "alpaca"
        else {"conversations": [{"from": "human", "value": "Q?"}, {"from": "gpt", "value": "A."}]}
    )
    prefix = run(tmp_path, [row] * 5, handler)
    lengths = [[len(x) for x in read(prefix, k)] for k in ("input_ids", "attention_mask", "labels")]
    assert lengths[0] == lengths[1] == lengths[2] and len(lengths[0]) == 5
