"""Every input format gives the same dataset as the same rows in JSON Lines; directories and globs expand."""

from __future__ import annotations

import csv
import gzip
import json

import pytest

from _preprocess_fixtures import docstring_texts, tokenizer_dir, write_jsonl
from llm.errors import NpuboxError
from llm.preprocess import main
from llm.preprocess.readers import BATCH_ROWS, expand_inputs, read_batches
from llm.sample.corpus import first_sentence

TEXTS = [first_sentence(t) for t in docstring_texts()[:200]]  # one line each, so .txt can hold them too


def preprocess(inputs, prefix, *extra) -> bytes:
    assert (
        main(
            [
                "--input",
                *map(str, inputs),
                "--tokenizer",
                str(tokenizer_dir()),
                "--output-prefix",
                str(prefix),
                "--append-eod",
                "--quiet",
                *extra,
            ]
        )
        == 0
    )
    return (prefix.parent / (prefix.name + "_text_document.bin")).read_bytes()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> bytes:
    tmp = tmp_path_factory.mktemp("ref")
    return preprocess([write_jsonl(tmp / "a.jsonl", ({"text": t} for t in TEXTS))], tmp / "ref")


def write_format(path, fmt):
    rows = [{"text": t, "id": i} for i, t in enumerate(TEXTS)]
    if fmt == "jsonl.gz":
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    elif fmt == "json":
        path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    elif fmt == "csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=["id", "text"])
            w.writeheader()
            w.writerows(rows)
    elif fmt == "txt":
        path.write_text("".join(t + "\n" for t in TEXTS), encoding="utf-8")
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=64)
    return path


@pytest.mark.parametrize("fmt", ["jsonl.gz", "json", "csv", "txt", "parquet"])
def test_format_gives_the_same_dataset_as_jsonl(fmt, reference, tmp_path):
    path = write_format(tmp_path / f"data.{fmt}", fmt)
    assert preprocess([path], tmp_path / "out") == reference


def test_json_file_holding_json_lines_is_read_as_lines(reference, tmp_path):
    path = write_jsonl(tmp_path / "lines.json", ({"text": t} for t in TEXTS))
    assert preprocess([path], tmp_path / "out") == reference


def test_directory_and_glob_inputs_concatenate_in_sorted_order(reference, tmp_path):
    d = tmp_path / "shards"
    d.mkdir()
    write_jsonl(d / "part-000.jsonl", ({"text": t} for t in TEXTS[:70]))
    write_jsonl(d / "part-001.jsonl", ({"text": t} for t in TEXTS[70:]))
    assert preprocess([d], tmp_path / "from_dir") == reference
    assert preprocess([str(d / "part-*.jsonl")], tmp_path / "from_glob") == reference


def test_directory_mixing_formats_is_refused(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"text": "x"}])
    (tmp_path / "b.csv").write_text("text\nx\n")
    with pytest.raises(NpuboxError, match="mixes formats"):
        expand_inputs([str(tmp_path)])


def test_unknown_suffix_and_missing_input_are_refused(tmp_path):
    (tmp_path / "data.xml").write_text("<x/>")
    with pytest.raises(NpuboxError, match="cannot tell its format"):
        expand_inputs([str(tmp_path / "data.xml")])
    with pytest.raises(NpuboxError, match="does not exist"):
        expand_inputs([str(tmp_path / "nope.jsonl")])
    with pytest.raises(NpuboxError, match="matches no file"):
        expand_inputs([str(tmp_path / "*.parquet")])


def test_readers_stream_in_bounded_batches(tmp_path):
    n = BATCH_ROWS * 2 + 5
    path = write_jsonl(tmp_path / "big.jsonl", ({"text": str(i)} for i in range(n)))
    sizes = [len(b.rows) for b in read_batches(path, ["text"])]
    assert sizes == [BATCH_ROWS, BATCH_ROWS, 5]
    rows = [{"text": str(i)} for i in range(n)]
    (tmp_path / "big.json").write_text(json.dumps(rows))
    batches = list(read_batches(tmp_path / "big.json", ["text"]))
    assert [len(b.rows) for b in batches] == [BATCH_ROWS, BATCH_ROWS, 5]
    assert batches[-1].numbers[-1] == n and batches[-1].rows[-1] == {"text": str(n - 1)}


def test_truncated_json_array_names_the_file(tmp_path):
    (tmp_path / "broken.json").write_text('[{"text": "a"}, {"text": "b"')
    with pytest.raises(NpuboxError, match=r"broken.json: record 2 is not valid JSON"):
        list(read_batches(tmp_path / "broken.json", ["text"]))
