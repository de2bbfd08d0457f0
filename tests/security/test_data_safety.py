"""Wrong data is never trusted silently: a .bin that does not belong to its .idx, a resume that would change
the run, an MMLU file whose stray quote swallows questions, an empty subject; and preprocess says what is
wrong (a key, a huge document, a full disk, a second run on the same prefix) in one sentence, leaving
nothing half-written."""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import shutil
import tracemalloc

import numpy as np
import pytest

from _preprocess_fixtures import tokenizer_dir, write_jsonl
from _pretrain_fixtures import MODEL, write_dataset
from llm.errors import NpuboxError
from llm.eval.data import MALFORMED, load_eval_set
from llm.preprocess import main as preprocess
from llm.pretrain.config import parse_config

torch = pytest.importorskip("torch")


def dataset(ws):
    return ws.root / "data" / MODEL / "sample_text_document"


# --- case 4: a .bin/.idx pair that does not belong together -------------------------------------------


def test_a_bin_from_another_dataset_is_refused_naming_the_bin(ws, tmp_path):
    other = write_dataset(tmp_path / "other" / "x", seed=7, count=3)
    shutil.copy(f"{other}.bin", f"{dataset(ws)}.bin")  # 3 short documents' tokens under a 30-document index
    with pytest.raises(NpuboxError) as info:
        parse_config(["--model", MODEL], ws)
    message = str(info.value)
    assert message.startswith(f"{dataset(ws)}.bin: ")
    assert "shorter than the" in message and "sample_text_document.idx describes" in message
    assert "the .bin is truncated or the two files do not belong together" in message


@pytest.mark.parametrize(
    "suffix, cut, words",
    [
        (".bin", 10, ["sample_text_document.bin: ", "shorter than the"]),
        (".idx", 100, ["sample_text_document.idx: ", "the index is truncated or corrupt"]),
        (".idx", 30, ["sample_text_document.idx: not a Megatron index"]),
    ],
)
def test_a_truncated_bin_or_idx_is_one_sentence_naming_it(ws, suffix, cut, words):
    path = f"{dataset(ws)}{suffix}"
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - cut if cut > 50 else cut)
    with pytest.raises(NpuboxError) as info:
        parse_config(["--model", MODEL], ws)
    for w in words:
        assert w in str(info.value)


def test_an_index_whose_offsets_disagree_with_its_lengths_is_refused(ws):
    idx = f"{dataset(ws)}.idx"
    raw = bytearray(open(idx, "rb").read())
    n = int.from_bytes(raw[18:26], "little")
    first_offset = 34 + 4 * n
    raw[first_offset + 8 : first_offset + 16] = (10**6).to_bytes(8, "little")  # sequence 1 starts elsewhere
    open(idx, "wb").write(bytes(raw))
    with pytest.raises(NpuboxError, match=r"sample_text_document.idx: sequence 1 starts at byte 1,000,000"):
        parse_config(["--model", MODEL], ws)


# --- resume: another dataset / shape, or fewer iterations than saved --------------------------------


def trained(ws, iteration=10, **args):
    from llm import checkpoint
    from llm.recipes import load_recipe

    folder = ws.root / "checkpoints" / MODEL / "pretrain"
    saved = checkpoint.make_args(
        load_recipe(MODEL),
        tp=1,
        pp=1,
        iteration=iteration,
        seq_length=32,
        global_batch_size=8,
        micro_batch_size=2,
        train_iters=20,
        **args,
    )
    state = {
        "model": {},
        "iteration": iteration,
        "args": saved,
        "optimizer": {"state": {}, "param_groups": []},
        "opt_param_scheduler": {"num_steps": iteration},
        "checkpoint_version": 3.0,
    }
    checkpoint.save_rank(folder, iteration, 0, 0, 1, state)
    checkpoint.write_latest(folder, iteration)
    return folder


RESUME = [
    "--model",
    MODEL,
    "--seq-length",
    "32",
    "--micro-batch-size",
    "2",
    "--global-batch-size",
    "8",
    "--train-iters",
    "20",
]


def test_resume_with_fewer_iterations_than_saved_is_refused(ws):
    folder = trained(ws)
    assert parse_config(RESUME, ws).load == str(folder)  # the same run, continued
    with pytest.raises(NpuboxError) as info:
        parse_config([*RESUME, "--train-iters", "5"], ws)
    assert str(info.value) == (
        f"--train-iters 5: --load {folder} is already at iteration 10; pass a larger "
        "--train-iters to continue it, or --save to another folder to start a new run"
    )


@pytest.mark.parametrize(
    "flag, value, said",
    [
        ("--seq-length", "64", "--seq-length 32 (now 64)"),
        ("--global-batch-size", "16", "--global-batch-size 8 (now 16)"),
    ],
)
def test_resume_with_another_sample_shape_is_refused(ws, flag, value, said):
    folder = trained(ws)
    with pytest.raises(NpuboxError) as info:
        parse_config([*RESUME, flag, value], ws)
    message = str(info.value)
    assert message.startswith(f"--load {folder} (iteration 10) was trained with {said}; resuming would silently change")
    assert "--from mcore --to mcore" in message  # how to start a new run from its weights


def test_resume_with_another_dataset_is_refused_when_the_checkpoint_names_its_data(ws, tmp_path):
    trained(ws, data_path=str(dataset(ws)))
    other = write_dataset(tmp_path / "other" / "x", seed=3, count=30)
    with pytest.raises(NpuboxError, match=rf"was trained with --data-path {dataset(ws)} \(now {other}\)"):
        parse_config([*RESUME, "--data-path", str(other)], ws)
    parse_config(RESUME, ws)  # the same data: fine


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--lr", "nan"),
        ("--lr", "inf"),
        ("--min-lr", "nan"),
        ("--clip-grad", "inf"),
        ("--adam-beta2", "nan"),
        ("--weight-decay", "-inf"),
    ],
)
def test_nan_and_infinite_rates_are_refused(ws, flag, value):
    with pytest.raises(NpuboxError) as info:
        parse_config(["--model", MODEL, f"{flag}={value}"], ws)
    assert str(info.value).startswith(f"{flag} is {float(value)}; expected a ")
    assert math.isnan(float(value)) or math.isinf(float(value))


# --- case 5 and an empty subject: MMLU files ----------------------------------------------------------


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_one_stray_quote_costs_one_row_not_the_rows_after_it(tmp_path):
    rows = ["Q1?,a,b,c,d,A", '"Stray quote in Q2?,a,b,c,d,B'] + [f"Q{i}?,a,b,c,d,C" for i in range(3, 17)]
    write(tmp_path / "test" / "anatomy_test.csv", "\n".join(rows) + "\n")
    es = load_eval_set("mmlu", tmp_path, shots=0)
    assert [q.question for q in es.test["anatomy"]] == ["Q1?"] + [f"Q{i}?" for i in range(3, 17)]
    assert es.problems.counts() == {MALFORMED: 1}
    assert es.problems.by_reason[MALFORMED][0].endswith("anatomy_test.csv:2")


def test_a_quoted_question_over_several_lines_is_still_one_row(tmp_path):
    text = 'Q1?,a,b,c,d,A\n"What does\nprint(1, 2)\nshow?","1 2",b,c,d,A\nQ3?,a,b,c,d,B\n'
    write(tmp_path / "test" / "cs_test.csv", text)
    es = load_eval_set("mmlu", tmp_path, shots=0)
    assert [q.question for q in es.test["cs"]] == ["Q1?", "What does\nprint(1, 2)\nshow?", "Q3?"]
    assert not es.problems.counts()


def test_an_empty_subject_file_is_named_and_not_scored(tmp_path):
    write(tmp_path / "test" / "anatomy_test.csv", "Q1?,a,b,c,d,A\n")
    write(tmp_path / "test" / "virology_test.csv", "")
    es = load_eval_set("mmlu", tmp_path, shots=0)
    assert list(es.test) == ["anatomy"]  # not "virology: 0 questions, 0.0 %"
    [(reason, [where])] = [(r, w) for r, w in es.problems.by_reason.items() if r != MALFORMED]
    assert reason == "subject file without a usable question (subject skipped)"
    assert where.endswith("virology_test.csv")


# --- preprocess ---------------------------------------------------------------------------------------


def run_preprocess(tmp_path, corpus, *extra):
    return preprocess(
        [
            "--input",
            str(corpus),
            "--tokenizer",
            str(tokenizer_dir()),
            "--output-prefix",
            str(tmp_path / "out" / "x"),
            "--quiet",
            *extra,
        ]
    )


def test_wrong_json_keys_name_the_missing_key_and_the_keys_there(tmp_path):
    corpus = write_jsonl(tmp_path / "a.jsonl", [{"content": "hello there", "id": i} for i in range(5)])
    with pytest.raises(NpuboxError) as info:
        run_preprocess(tmp_path, corpus, "--json-keys", "text")
    assert str(info.value) == (
        f"no document was written: all 5 rows of {corpus} were skipped (5 × missing key 'text'); "
        "the rows have the keys content, id: name the text's key with --json-keys"
    )
    assert sorted(os.listdir(tmp_path / "out")) == []


def test_a_huge_single_line_document_is_skipped_and_counted(tmp_path, capsys):
    big = "word " * (600 * 1024)  # 3 MB on one line
    corpus = write_jsonl(tmp_path / "a.jsonl", [{"text": "small one"}, {"text": big}, {"text": "small two"}])
    assert run_preprocess(tmp_path, corpus, "--max-document-mb", "1") == 0
    out = capsys.readouterr().out
    assert "1 × document larger than 1 MB (--max-document-mb): a.jsonl line 2" in out
    assert "documents: 2" in out


def test_an_oversized_line_is_never_held_whole(tmp_path):
    from llm.preprocess.readers import TooLarge, read_batches

    path = tmp_path / "a.jsonl"
    with open(path, "w") as f:
        f.write(json.dumps({"text": "x" * (40 << 20)}) + "\n" + json.dumps({"text": "after"}) + "\n")
    tracemalloc.start()
    rows = [row for batch in read_batches(path, ["text"], 1 << 20) for row in batch.rows]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert rows == [TooLarge((40 << 20) + 13), {"text": "after"}]
    assert peak < 8 << 20  # a 40 MB line read in bounded pieces


def test_a_full_disk_is_one_sentence_and_leaves_nothing(tmp_path, monkeypatch):
    from llm.preprocess.indexed_writer import IndexedDatasetWriter

    real_add = IndexedDatasetWriter.add_documents

    def add_then_fill_the_disk(self, ids, lengths):
        real_add(self, ids, lengths)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(IndexedDatasetWriter, "add_documents", add_then_fill_the_disk)
    corpus = write_jsonl(tmp_path / "a.jsonl", [{"text": f"document {i}"} for i in range(50)])
    with pytest.raises(NpuboxError) as info:
        run_preprocess(tmp_path, corpus)
    assert str(info.value) == (
        f"no space left on {tmp_path / 'out'} while writing {tmp_path / 'out' / 'x'}_*: free some "
        "space or choose another --output-prefix; the partial files were removed"
    )
    assert os.listdir(tmp_path / "out") == []


def test_a_second_run_on_the_same_prefix_leaves_the_first_ones_files_alone(tmp_path):
    corpus = write_jsonl(tmp_path / "a.jsonl", [{"text": f"document {i}"} for i in range(50)])
    out = tmp_path / "out"
    out.mkdir()
    live = [out / ".x_text_document.bin.npubox-a1b2c3d4.tmp", out / ".x_text_document.idx.npubox-e5f6g7h8.lengths"]
    for p in live:  # the first run's temporaries, being written
        p.write_bytes(b"tokens")
    with open(out / ".x.lock", "w") as held:  # the first run holds the prefix (llm.target_lock)
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(NpuboxError, match=rf"--output-prefix {out / 'x'}: another run is writing it right now"):
            run_preprocess(tmp_path, corpus)
        assert all(p.read_bytes() == b"tokens" for p in live)
    assert run_preprocess(tmp_path, corpus) == 0  # after it: its leftovers are stale and go
    assert sorted(os.listdir(out)) == ["x_text_document.bin", "x_text_document.idx"]


def test_a_users_file_that_only_looks_like_a_temporary_is_kept(tmp_path, capsys):
    # Issue 19, case 3: a name without npubox's marker and exact random part is the user's, whatever it ends with.
    corpus = write_jsonl(tmp_path / "a.jsonl", [{"text": f"document {i}"} for i in range(50)])
    out = tmp_path / "out"
    out.mkdir()
    mine = [out / ".x_text_document.bin.MY-THESIS.tmp", out / ".x_text_document.idx.draft.lengths"]
    for p in mine:
        p.write_text("years of work")
    assert run_preprocess(tmp_path, corpus) == 0
    assert all(p.read_text() == "years of work" for p in mine)
    assert "removing" not in capsys.readouterr().err


def test_what_preprocess_writes_passes_the_pair_check(tmp_path):
    from llm.indexed_dataset import check_indexed_dataset

    corpus = write_jsonl(tmp_path / "a.jsonl", [{"text": f"document number {i}"} for i in range(20)])
    run_preprocess(tmp_path, corpus)
    info = check_indexed_dataset(tmp_path / "out" / "x_text_document")
    assert (info.sequences, info.documents) == (20, 21)
    tokens = np.fromfile(tmp_path / "out" / "x_text_document.bin", dtype=np.uint16)
    assert info.tokens == len(tokens)
