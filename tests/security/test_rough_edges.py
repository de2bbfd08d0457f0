"""Issue 19's rough edges: input that was refused or survived, but with a traceback, a vague message or no
bound. Each test is one edge: a clear message naming the file, field or value, or the right result."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llm.errors import NpuboxError

REPO = Path(__file__).resolve().parents[2]


def test_a_gbk_ceval_csv_names_its_file_and_the_fix(tmp_path):
    from llm.eval.data import load_eval_set

    path = tmp_path / "val" / "law_val.csv"
    path.parent.mkdir()
    path.write_bytes("id,question,A,B,C,D,answer\n0,问题？,a,b,c,d,B\n".encode("gbk"))
    with pytest.raises(
        NpuboxError, match=rf"^{re.escape(str(path))}: not UTF-8 \(byte \d+ is 0x[0-9a-f]{{2}}\); .*iconv"
    ):
        load_eval_set("ceval", tmp_path, shots=0)


def test_a_utf8_bom_in_boolq_keeps_its_first_row(tmp_path):
    from llm.eval.data import load_eval_set

    rows = [{"question": f"q{i}", "passage": "p", "answer": i % 2 == 0} for i in range(3)]
    (tmp_path / "dev.jsonl").write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r) + "\n" for r in rows).encode())
    es = load_eval_set("boolq", tmp_path, shots=0)
    assert [q.question for q in es.test["boolq"]] == ["q0", "q1", "q2"]
    assert es.problems.counts() == {}


def test_a_lock_of_random_bytes_is_named_not_a_traceback(tmp_path):
    from llm.env.spec import parse_lock

    lock = tmp_path / "cpu.lock"
    lock.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(NpuboxError, match=rf"^{re.escape(str(lock))}: not a lock file \(not UTF-8 text"):
        parse_lock(lock)


def test_the_readme_says_how_many_layers_tiny_has():
    from llm.recipes import load_recipe

    layers = load_recipe("tiny").architecture.num_layers
    readme = (REPO / "README.md").read_text()
    said = set(re.findall(r"`tiny`[^\n]*?(\d+) layers", readme))
    assert said == {str(layers)}, said


def test_arguments_after_dashes_keep_their_quoting():
    """`-- --save 'my dir' --note "it's"`: one argument each, as the shell passed them (invoke's remainder joins
    them with spaces); a pod's command hands them on as arguments of their own."""
    proc = subprocess.run(
        [sys.executable, "-m", "invoke", "manifest", "--env", "cpu", "--target", "pytorchjob", "--nodes", "1"]
        + ["--", "--save", "my dir", "--note", "it's"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    import yaml

    doc = yaml.safe_load(proc.stdout)
    from _manifest_nodes import pod_argv

    container = doc["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    expanded = pod_argv(container, {"RANK": "0", "MASTER_ADDR": "head", "MASTER_PORT": "29500"})
    assert expanded[-4:] == ["--save", "my dir", "--note", "it's"]


def test_preprocess_workers_are_capped_at_the_cores_it_may_use(capsys):
    from llm.preprocess import build_parser, default_workers, resolve_defaults

    args = build_parser().parse_args(["--input", "x.jsonl", "--tokenizer", "t", "--output-prefix", "o"])
    args.workers = 10000
    resolve_defaults(args)
    assert args.workers == default_workers()
    assert f"--workers 10000 is more than the {default_workers()} cores this process may use" in capsys.readouterr().err
