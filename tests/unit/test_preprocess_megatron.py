"""Acceptance 1: megatron-core's own IndexedDataset and GPTDataset read what `llm preprocess` writes."""

from __future__ import annotations

import struct
import types

import numpy as np
import pytest

from _preprocess_fixtures import docstring_texts, tokenizer_dir, write_jsonl
from llm.preprocess import main
from llm.sample.corpus import first_sentence

pytest.importorskip("megatron.core")


def corpus_of_20k() -> list[str]:
    """≥ 20,000 distinct documents from the stdlib docstrings: whole, by paragraph, by first sentence, by line."""
    docs = list(docstring_texts())
    docs += [p for d in docstring_texts() for p in d.split("\n\n") if len(p) >= 40]
    docs += [first_sentence(d) for d in docstring_texts()]
    docs += [line for d in docstring_texts() for line in d.splitlines() if len(line) >= 30]
    docs = [d for d in dict.fromkeys(docs) if d.strip()]
    assert len(docs) >= 20_000
    return docs


@pytest.fixture(scope="module")
def pretrain_prefix(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mega")
    texts = corpus_of_20k()
    write_jsonl(tmp / "corpus.jsonl", ({"text": t} for t in texts))
    prefix = tmp / "out" / "corpus"
    rc = main(
        [
            "--input",
            str(tmp / "corpus.jsonl"),
            "--tokenizer",
            str(tokenizer_dir()),
            "--output-prefix",
            str(prefix),
            "--append-eod",
            "--quiet",
        ]
    )
    assert rc == 0
    return texts, prefix


def test_every_document_equals_the_tokenizers_own_output_plus_eod(pretrain_prefix):
    from megatron.core.datasets.indexed_dataset import DType, IndexedDataset
    from transformers import AutoTokenizer

    texts, prefix = pretrain_prefix
    hf = AutoTokenizer.from_pretrained(str(tokenizer_dir()))
    expected = hf(texts)["input_ids"]
    ds = IndexedDataset(str(prefix) + "_text_document")
    assert len(ds) == len(texts)
    assert ds.index.dtype == DType.optimal_dtype(len(hf)) == np.uint16
    assert list(ds.document_indices) == list(range(len(texts) + 1))
    for i, ids in enumerate(expected):
        assert ds[i].tolist() == ids + [hf.eos_token_id], f"document {i} differs"


def test_index_header_is_megatrons(pretrain_prefix):
    _, prefix = pretrain_prefix
    raw = (prefix.parent / (prefix.name + "_text_document.idx")).read_bytes()
    assert raw[:9] == b"MMIDIDX\x00\x00"
    assert struct.unpack("<Q", raw[9:17]) == (1,)
    assert raw[17] == 8  # DType.uint16


def test_gpt_dataset_reads_it(pretrain_prefix, tmp_path):
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    _, prefix = pretrain_prefix
    tokenizer = types.SimpleNamespace(vocab_size=2048, eod=0, pad=0, unique_identifiers={"class": "test"})
    config = GPTDatasetConfig(
        random_seed=1234,
        sequence_length=64,
        blend=([str(prefix) + "_text_document"], None),
        split="100,0,0",
        tokenizer=tokenizer,
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        path_to_cache=str(tmp_path / "cache"),
    )
    train, _, _ = BlendedMegatronDatasetBuilder(GPTDataset, [32, None, None], lambda: True, config).build()
    sample = train[0]
    assert sample["tokens"].shape == (64,)
    assert int(sample["tokens"].max()) < 2048
    assert (sample["labels"][:-1] == sample["tokens"][1:]).all()


def test_instruction_files_align_and_mask_the_prompt(tmp_path):
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    from transformers import AutoTokenizer

    rows = [
        {"instruction": f"Summarize item {i}.", "input": "x" * (i % 3), "output": t[:200]}
        for i, t in enumerate(docstring_texts()[:300])
    ]
    write_jsonl(tmp_path / "a.jsonl", rows)
    prefix = tmp_path / "sft"
    assert (
        main(
            [
                "--input",
                str(tmp_path / "a.jsonl"),
                "--tokenizer",
                str(tokenizer_dir()),
                "--output-prefix",
                str(prefix),
                "--handler",
                "alpaca",
                "--quiet",
            ]
        )
        == 0
    )
    ids, mask, labels = (
        IndexedDataset(f"{prefix}_packed_{k}_document") for k in ("input_ids", "attention_mask", "labels")
    )
    assert len(ids) == len(mask) == len(labels) == len(rows)
    assert ids.index.dtype == np.int32 and labels.index.dtype == np.int32
    hf = AutoTokenizer.from_pretrained(str(tokenizer_dir()))
    for i, row in enumerate(rows):
        assert len(ids[i]) == len(mask[i]) == len(labels[i])
        user = row["instruction"] + ("\n" + row["input"] if row["input"] else "")
        prompt = hf.apply_chat_template([{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True)
        full = hf.apply_chat_template(
            [{"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}], tokenize=False
        )
        n_prompt = len(hf(prompt)["input_ids"])
        assert full.startswith(prompt)
        assert ids[i][:n_prompt].tolist() == hf(prompt)["input_ids"]
        assert (labels[i][:n_prompt] == -100).all()
        assert (labels[i][n_prompt:] == ids[i][n_prompt:]).all() and (labels[i][n_prompt:] != -100).all()
        assert hf.decode(ids[i]) == full
        assert (mask[i] == 1).all()
