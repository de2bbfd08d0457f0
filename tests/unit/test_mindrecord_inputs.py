"""The MindRecord preprocess reads an alpaca JSON array or JSON Lines, and names the line of a bad one."""

import pytest

from llm.errors import NpuboxError
from llm.mindformers.preprocess import read_records


def test_a_json_array_and_json_lines_give_the_same_records(tmp_path):
    rows = [{"instruction": "a", "input": "", "output": "b"}, {"instruction": "c", "input": "d", "output": "e"}]
    (tmp_path / "x.json").write_text(
        '[{"instruction": "a", "input": "", "output": "b"},\n {"instruction": "c", "input": "d", "output": "e"}]'
    )
    (tmp_path / "x.jsonl").write_text(
        '\ufeff{"instruction": "a", "input": "", "output": "b"}\n\n{"instruction": "c", "input": "d", "output": "e"}\n'
    )
    assert read_records(tmp_path / "x.json") == rows == read_records(tmp_path / "x.jsonl")


def test_a_bad_line_is_named_by_its_line_in_the_file(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"instruction": "a"}\n\n{"instruction": \n')
    with pytest.raises(NpuboxError, match=r"x.jsonl: line 3, column \d+: not JSON"):
        read_records(tmp_path / "x.jsonl")
    (tmp_path / "y.json").write_text('[{"instruction": "a"}, 3]')
    with pytest.raises(NpuboxError, match="y.json: record 2 is not a JSON object"):
        read_records(tmp_path / "y.json")
    (tmp_path / "z.jsonl").write_text('"just a string"\n')
    with pytest.raises(NpuboxError, match="z.jsonl: record 1 is not a JSON object"):
        read_records(tmp_path / "z.jsonl")
