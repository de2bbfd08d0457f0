"""`python -m llm eval` end to end on a tiny random Qwen2 HF directory (transformers engine):
each task format, the JSON on disk, the workspace defaults, bad input reported by reason."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from llm.__main__ import main as llm_main
from llm.eval import sample_sets
from llm.eval.data import BAD_ANSWER, MALFORMED, NO_DEV

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from _eval_tiny_model import build_tiny_hf

    root = tmp_path_factory.mktemp("tiny")
    hf = build_tiny_hf(root / "hf")
    data = root / "eval"
    sample_sets.write_sample_sets(data)
    return hf, data


@pytest.mark.parametrize(
    "task, shots, subjects, categories",
    [
        (
            "mmlu",
            5,
            {"college_computer_science": 35, "formal_logic": 15, "high_school_computer_science": 35},
            {"STEM": 70, "humanities": 15},
        ),
        ("ceval", 1, {"college_programming": 35, "logic": 15}, {"STEM": 35, "Humanities": 15}),
        ("boolq", 0, {"boolq": 35}, {"boolq": 35}),
    ],
)
def test_each_task_writes_its_json(tiny, tmp_path, capsys, task, shots, subjects, categories):
    hf, data = tiny
    out = tmp_path / "res" / f"{task}.json"
    shots_arg = ["--shots", str(shots)] if task == "ceval" else []  # mmlu and boolq: their defaults
    rc = llm_main(
        [
            "eval",
            "--task",
            task,
            "--data-path",
            str(data / task),
            "--hf-dir",
            str(hf),
            *shots_arg,
            "--batch-size",
            "4",
            "--output",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert f"{task} accuracy" in printed and "overall" in printed
    assert sorted(p.name for p in out.parent.iterdir()) == [f"{task}.json"]  # nothing temporary left
    r = json.loads(out.read_text())
    assert r["task"] == task and r["checkpoint"] == {"engine": "transformers", "hf_dir": str(hf)}
    assert {k: v["total"] for k, v in r["subjects"].items()} == subjects
    assert {k: v["total"] for k, v in r["categories"].items()} == categories
    assert r["overall"]["total"] == sum(subjects.values()) == len(r["predictions"])
    assert r["overall"]["correct"] == sum(p["prediction"] == p["answer"] for p in r["predictions"])
    assert r["accuracy"] == r["overall"]["correct"] / r["overall"]["total"]
    for rel, digest in r["data"]["sha256"].items():
        assert hashlib.sha256((data / task / rel).read_bytes()).hexdigest() == digest
    assert len(r["data"]["sha256"]) == (1 if task == "boolq" else 2 * len(subjects))
    assert r["settings"]["shots"] == shots and r["settings"]["batch_size"] == 4
    assert r["settings"]["max_length"] == 512
    n_choices = 2 if task == "boolq" else 4
    assert all(len(p["logprobs"]) == n_choices for p in r["predictions"])
    assert r["timing"]["forward_prefixes"] >= len(r["predictions"])
    assert r["skipped"] == {}


def test_batch_size_does_not_change_predictions(tiny, tmp_path):
    hf, data = tiny
    preds = []
    for bs in ("1", "16"):
        out = tmp_path / f"{bs}.json"
        llm_main(
            [
                "eval",
                "--task",
                "mmlu",
                "--data-path",
                str(data / "mmlu"),
                "--hf-dir",
                str(hf),
                "--shots",
                "2",
                "--subjects",
                "formal_logic",
                "--batch-size",
                bs,
                "--output",
                str(out),
                "--quiet",
            ]
        )
        preds.append([p["prediction"] for p in json.loads(out.read_text())["predictions"]])
    assert len(preds[0]) == 15 and preds[0] == preds[1]


def test_model_alone_uses_the_workspace(tiny, tmp_path, monkeypatch):
    from llm.workspace import Workspace

    hf, data = tiny
    ws = Workspace(tmp_path / "ws")
    shutil.copytree(hf, ws.hf_dir("tiny"))
    sample_sets.write_sample_sets(ws.eval)
    monkeypatch.setenv("NPUBOX_WORKSPACE", str(ws.root))
    assert llm_main(["eval", "--model", "tiny", "--task", "boolq", "--quiet"]) == 0
    r = json.loads((ws.eval / "tiny" / "boolq.json").read_text())
    assert r["model"] == "tiny" and r["checkpoint"]["hf_dir"] == str(ws.hf_dir("tiny"))
    assert r["data"]["path"] == str(ws.eval / "boolq")


def test_bad_rows_are_reported_in_json_and_on_screen(tiny, tmp_path, capsys):
    hf, data = tiny
    bad = tmp_path / "mmlu"
    shutil.copytree(data / "mmlu", bad)
    test_csv = bad / "test" / "formal_logic_test.csv"
    test_csv.write_text(test_csv.read_text() + "Only three,a,b\nWhat?,a,b,c,d,F\n")
    (bad / "dev" / "college_computer_science_dev.csv").unlink()
    out = tmp_path / "r.json"
    assert (
        llm_main(
            [
                "eval",
                "--task",
                "mmlu",
                "--data-path",
                str(bad),
                "--hf-dir",
                str(hf),
                "--shots",
                "1",
                "--subjects",
                "formal_logic,college_computer_science",
                "--output",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    r = json.loads(out.read_text())
    assert r["skipped"] == {BAD_ANSWER: 1, MALFORMED: 1, NO_DEV: 35}
    assert r["skipped_where"][BAD_ANSWER] == [f"{test_csv}:17"]
    assert list(r["subjects"]) == ["formal_logic"]
    assert f"skipped 35: {NO_DEV}" in printed and f"skipped 1: {MALFORMED}" in printed


def test_user_errors_print_one_sentence(tiny, tmp_path, capsys):
    hf, data = tiny
    assert llm_main(["eval", "--task", "hellaswag", "--data-path", str(data), "--hf-dir", str(hf)]) == 1
    assert (
        capsys.readouterr().err == "error: --task 'hellaswag' is not a known task; expected one of mmlu, ceval, boolq\n"
    )
    assert llm_main(["eval", "--task", "mmlu", "--data-path", str(tmp_path / "missing"), "--hf-dir", str(hf)]) == 1
    assert (
        capsys.readouterr().err
        == f"error: --data-path {tmp_path / 'missing'}: not found; expected the mmlu data directory\n"
    )
    assert llm_main(["eval", "--task", "boolq", "--data-path", str(data / "boolq"), "--hf-dir", str(tmp_path)]) == 1
    assert "holds no config.json" in capsys.readouterr().err
    assert llm_main(["eval", "--task", "boolq", "--data-path", str(data / "boolq")]) == 1
    assert "no model given" in capsys.readouterr().err
