"""Bad rows are skipped, counted by reason with their line numbers; --strict makes the first one an error."""

from __future__ import annotations

import struct

import pytest

from _preprocess_fixtures import tokenizer_dir
from llm.errors import NpuboxError
from llm.preprocess import main

GOOD = '{"text": "A good document about dictionaries."}'
LINES = [
    GOOD,  # 1
    '{"title": "no text key"}',  # 2 missing key
    '{"text": 42}',  # 3 non-string
    '{"text": "   "}',  # 4 empty text
    '{"text": "broken',  # 5 not JSON
    GOOD,  # 6
    '["a list, not an object"]',  # 7 not an object
    '{"text": null}',  # 8 null
]


def write_bad(path):
    data = (
        "\n".join(LINES).encode() + b"\n" + b'{"text": "caf\xe9 latin-1"}\n' + GOOD.encode() + b"\n"
    )  # line 9: not UTF-8
    path.write_bytes(data)
    return path


def run(tmp_path, *extra):
    return main(
        [
            "--input",
            str(write_bad(tmp_path / "bad.jsonl")),
            "--tokenizer",
            str(tokenizer_dir()),
            "--output-prefix",
            str(tmp_path / "out" / "bad"),
            "--quiet",
            *extra,
        ]
    )


def test_bad_rows_are_skipped_and_reported_by_reason(tmp_path, capsys):
    assert run(tmp_path) == 0
    out = capsys.readouterr().out
    assert "skipped rows: 7" in out
    assert "1 × missing key 'text': bad.jsonl line 2" in out
    assert "1 × non-string 'text' (int): bad.jsonl line 3" in out
    assert "1 × empty text in 'text': bad.jsonl line 4" in out
    assert (
        "3 × undecodable line (not UTF-8 / not a JSON object): bad.jsonl line 5, bad.jsonl line 7, bad.jsonl line 9"
        in out
    )
    assert "1 × key 'text' is null: bad.jsonl line 8" in out
    idx = (tmp_path / "out" / "bad_text_document.idx").read_bytes()
    assert struct.unpack("<QQ", idx[18:34]) == (3, 4)  # sequences, document indices


def test_strict_fails_on_the_first_bad_row_and_writes_nothing(tmp_path):
    with pytest.raises(NpuboxError, match=r"bad.jsonl line 2: missing key 'text'"):
        run(tmp_path, "--strict")
    assert list((tmp_path / "out").iterdir()) == []


def test_csv_row_with_bad_bytes_is_undecodable(tmp_path, capsys):
    (tmp_path / "d.csv").write_bytes(b"text\nfine text here\ncaf\xe9\nmore fine text\n")
    assert (
        main(
            [
                "--input",
                str(tmp_path / "d.csv"),
                "--tokenizer",
                str(tokenizer_dir()),
                "--output-prefix",
                str(tmp_path / "c"),
                "--quiet",
            ]
        )
        == 0
    )
    assert "1 × undecodable line (not UTF-8 / not a JSON object): d.csv line 3" in capsys.readouterr().out


def test_parquet_without_the_column_reports_missing_key(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"content": ["a", "b"]}), tmp_path / "d.parquet")
    with pytest.raises(NpuboxError, match=r"d.parquet record 1: missing key 'text'"):
        main(
            [
                "--input",
                str(tmp_path / "d.parquet"),
                "--tokenizer",
                str(tokenizer_dir()),
                "--output-prefix",
                str(tmp_path / "p"),
                "--quiet",
                "--strict",
            ]
        )


def test_all_rows_bad_is_an_error_and_leaves_nothing(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"body": "x"}\n{"body": "y"}\n')
    with pytest.raises(NpuboxError, match="no document was written: all 2 rows"):
        main(
            [
                "--input",
                str(tmp_path / "x.jsonl"),
                "--tokenizer",
                str(tokenizer_dir()),
                "--output-prefix",
                str(tmp_path / "o" / "x"),
                "--quiet",
            ]
        )
    assert list((tmp_path / "o").iterdir()) == []
