"""Reading MMLU, C-Eval and BoolQ files: layouts, few-shot dev rows, and every bad-input reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm.errors import NpuboxError
from llm.eval import sample_sets
from llm.eval.data import BAD_ANSWER, FEW_DEV, MALFORMED, NO_DEV, load_eval_set


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> Path:
    return Path(sample_sets.write_sample_sets(tmp_path_factory.mktemp("eval"))["mmlu"]).parent


def test_sample_sets_are_deterministic(tmp_path, sets):
    again = sample_sets.write_sample_sets(tmp_path)
    for task, path in again.items():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            assert f.read_bytes() == (sets / task / f.relative_to(path)).read_bytes(), f


def test_mmlu_headerless_with_dev_shots(sets):
    es = load_eval_set("mmlu", sets / "mmlu", shots=5)
    assert list(es.test) == ["college_computer_science", "formal_logic", "high_school_computer_science"]
    ex = es.test["high_school_computer_science"][0]
    assert ex.question.startswith("Which Python standard library module provides")
    assert len(ex.choices) == 4 and 0 <= ex.answer < 4
    # the first five dev rows, in file order
    dev_first = (sets / "mmlu/dev/formal_logic_dev.csv").read_text().splitlines()[0]
    assert es.shots["formal_logic"][0].question == dev_first.split(",")[0]
    assert all(len(s) == 5 for s in es.shots.values())
    assert es.num_questions == 35 + 15 + 35
    assert not es.problems.counts()
    assert len(es.files) == 6


def test_mmlu_flat_test_dir_and_subject_filter(tmp_path):
    write(tmp_path / "data/test/anatomy_test.csv", "Q1?,a,b,c,d,A\n")
    write(tmp_path / "data/test/virology_test.csv", "Q2?,a,b,c,d,B\n")
    write(tmp_path / "data/dev/virology_dev.csv", "S?,a,b,c,d,C\n")
    # MindSpeed-LLM's DATA_PATH points at .../test/ itself; dev/ is its sibling
    es = load_eval_set("mmlu", tmp_path / "data/test", shots=1, subjects=["virology"])
    assert list(es.test) == ["virology"] and es.test["virology"][0].answer == 1
    assert es.shots["virology"][0].question == "S?"
    with pytest.raises(NpuboxError, match="--subjects nosuch: not found in .*available: anatomy, virology"):
        load_eval_set("mmlu", tmp_path / "data", shots=0, subjects=["nosuch"])


def test_mmlu_bad_rows_are_counted_by_reason(tmp_path):
    write(
        tmp_path / "test/anatomy_test.csv",
        'Good?,a,b,c,d,A\nShort,a,b,c,D\n"multi\nline?",a,b,c,d,D\nBad answer?,a,b,c,d,E\n,a,b,c,d,A\n',
    )
    write(tmp_path / "test/virology_test.csv", "V1?,a,b,c,d,A\nV2?,a,b,c,d,B\n")  # no dev file
    write(tmp_path / "dev/anatomy_dev.csv", "S1?,a,b,c,d,A\nS2?,a,b,c,d,Z\n")
    es = load_eval_set("mmlu", tmp_path, shots=2)
    assert [q.question for q in es.test["anatomy"]] == ["Good?", "multi\nline?"]
    assert "virology" not in es.test  # skipped: no dev file for its shots
    assert es.problems.counts() == {BAD_ANSWER: 2, FEW_DEV: 1, MALFORMED: 2, NO_DEV: 2}
    assert es.problems.by_reason[BAD_ANSWER][0].endswith("anatomy_test.csv:5")
    assert es.problems.by_reason[NO_DEV][0].endswith("dev/virology_dev.csv")
    # zero-shot needs no dev file
    assert load_eval_set("mmlu", tmp_path, shots=0).num_questions == 4


def test_ceval_header_val_split(sets):
    es = load_eval_set("ceval", sets / "ceval", shots=5)
    assert list(es.test) == ["college_programming", "logic"]
    assert es.test["college_programming"][0].question.startswith("Python 标准库中哪个模块提供")
    assert es.num_questions == 35 + 15
    assert len(es.shots["logic"]) == 5 and not es.problems.counts()


def test_ceval_columns_by_name_and_bad_header(tmp_path):
    write(tmp_path / "val/law_val.csv", "answer,D,C,B,A,question,id\nB,d,c,b,a,问题？,0\nB,d,c\n")
    es = load_eval_set("ceval", tmp_path, shots=0)
    ex = es.test["law"][0]
    assert (ex.question, ex.choices, ex.answer) == ("问题？", ("a", "b", "c", "d"), 1)
    assert es.problems.counts() == {MALFORMED: 1}
    write(tmp_path / "val/law_val.csv", "id,question,A,B,C,D\n0,q,a,b,c,d\n")
    with pytest.raises(NpuboxError, match=r"law_val.csv: header id,question,A,B,C,D lacks answer"):
        load_eval_set("ceval", tmp_path, shots=0)


def test_boolq_jsonl_and_bad_lines(tmp_path, sets):
    es = load_eval_set("boolq", sets / "boolq", shots=0)
    assert es.num_questions == 35 and es.shots["boolq"] == []
    lines = [
        {"question": "is it", "passage": "It is.", "answer": True},
        {"question": "is it not", "passage": "It is.", "answer": False},
        {"question": "is it", "passage": "It is.", "answer": "yes"},
        {"question": "", "passage": "It is.", "answer": True},
    ]
    text = "".join(json.dumps(d) + "\n" for d in lines) + "{not json\n"
    write(tmp_path / "b/dev.jsonl", text)
    es = load_eval_set("boolq", tmp_path / "b", shots=0)
    assert [q.answer for q in es.test["boolq"]] == [1, 0]
    assert es.problems.counts() == {BAD_ANSWER: 1, MALFORMED: 2}
    es = load_eval_set("boolq", tmp_path / "b", shots=1)  # no train.jsonl for the shots
    assert es.test == {} and es.problems.counts()[NO_DEV] == 2


def test_user_errors_are_one_sentence(tmp_path):
    with pytest.raises(
        NpuboxError, match=r"^--task 'hellaswag' is not a known task; expected one of mmlu, ceval, boolq$"
    ):
        load_eval_set("hellaswag", tmp_path, shots=0)
    with pytest.raises(NpuboxError, match=r"--data-path .*/nope: not found; expected the mmlu data directory"):
        load_eval_set("mmlu", tmp_path / "nope", shots=0)
    with pytest.raises(NpuboxError, match=r"holds no \*_test.csv files"):
        load_eval_set("mmlu", tmp_path, shots=0)
    with pytest.raises(NpuboxError, match=r"dev.jsonl: not found"):
        load_eval_set("boolq", tmp_path, shots=0)
