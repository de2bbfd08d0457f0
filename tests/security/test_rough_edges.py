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


# --- eval --load of a checkpoint with other shapes: the sentence convert gives, not torch's size-mismatch page ------


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    pytest.importorskip("megatron.core")
    from _convert_fixtures import make_hf
    from llm.convert import main as convert
    from llm.eval import sample_sets

    root = tmp_path_factory.mktemp("shapes")
    hf = make_hf(root, "tiny")
    sample_sets.write_sample_sets(root / "eval")
    argv = ["--model", "tiny", "--from", "hf", "--load-dir", str(hf), "--save-dir", str(root / "mcore")]
    assert convert([*argv, "--tp", "1", "--pp", "1"]) == 0
    return root


def _eval_and_convert_back(root: Path, load: Path, model: str) -> tuple[subprocess.CompletedProcess, ...]:
    """`llm eval --load` and `llm convert --from mcore` of the same checkpoint, each in its own process."""
    common = ["--model", model]
    runs = (
        ["eval", *common, "--task", "boolq", "--data-path", str(root / "eval" / "boolq"), "--load", str(load)]
        + ["--tokenizer", str(root / "tiny" / "hf"), "--output", str(root / "out.json")],
        ["convert", *common, "--from", "mcore", "--to", "hf", "--load-dir", str(load), "--save-dir", str(root / "b")],
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "NPUBOX_DEVICE": "cpu"}
    return tuple(
        subprocess.run([sys.executable, "-m", "llm", *argv], cwd=REPO, env=env, capture_output=True, text=True)
        for argv in runs
    )


def test_eval_refuses_a_checkpoint_of_another_recipe_as_convert_does(tiny_checkpoint):
    """tiny's checkpoint (2 query groups) read as tiny-qwen (4): the same keys, other QKV shapes."""
    load = tiny_checkpoint / "mcore"
    evaluated, converted = _eval_and_convert_back(tiny_checkpoint, load, "tiny-qwen")
    said = f"error: {load}: checkpoint args num_query_groups=2, recipe tiny-qwen has 4"
    assert converted.returncode == 1 and converted.stderr.strip().endswith(said), converted.stderr[-2000:]
    assert evaluated.returncode == 1 and evaluated.stderr.strip().endswith(said), evaluated.stderr[-2000:]
    assert "Traceback" not in evaluated.stderr and "size mismatch" not in evaluated.stderr


def test_eval_names_a_tensor_whose_shape_the_args_do_not_explain(tiny_checkpoint, tmp_path):
    import shutil

    import torch

    load = tmp_path / "cut"
    shutil.copytree(tiny_checkpoint / "mcore", load)
    rank = load / "iter_0000001" / "mp_rank_00" / "model_optim_rng.pt"
    state = torch.load(rank, weights_only=False)
    state["model"]["decoder.final_layernorm.weight"] = torch.ones(32)  # the recipe's hidden size is 64
    torch.save(state, rank)
    evaluated, converted = _eval_and_convert_back(tiny_checkpoint, load, "tiny")
    assert converted.returncode == 1
    assert f"error: {load}: tensor final_ln has TP rank blocks [32]; recipe tiny expects [64]" in converted.stderr
    assert evaluated.returncode == 1, evaluated.stderr[-2000:]
    assert evaluated.stderr.strip().endswith(
        f"error: {rank}: tensor 'decoder.final_layernorm.weight' has shape [32], recipe tiny at tp=1 expects [64]"
    ), evaluated.stderr[-2000:]
    assert "Traceback" not in evaluated.stderr


# --- tables: a value is never cut to "…", piped (plain text, a row a line) or on a narrow terminal (folded) ----------

PLAN_ENV = "ascend-mindspeed-llm-2.0.0"


def _dry_run_plan(**env: str) -> str:
    import os

    environ = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "TTY_COMPATIBLE", "FORCE_COLOR")}
    proc = subprocess.run(
        [sys.executable, "-m", "invoke", "build-image", "--env", PLAN_ENV, "--arch", "aarch64", "--dry-run"],
        cwd=REPO,
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_a_piped_dry_run_plan_keeps_every_value_whole_a_row_a_line():
    from llm.env.spec import load_spec

    out = _dry_run_plan()
    assert "…" not in out
    for src in load_spec(PLAN_ENV, arch="aarch64").spec.sources:
        assert re.search(rf"^npubox\.source\.{re.escape(src.name)} +{src.commit}$", out, re.M), src.name
        assert f"or {src.name}-{src.commit}.tar.gz in a folder and pass --source-cache DIR" in out
    assert "\x1b[" not in out  # no colour codes in a log


def test_a_dry_run_plan_on_a_narrow_terminal_folds_long_values():
    from llm.env.spec import load_spec

    out = _dry_run_plan(TTY_COMPATIBLE="1", COLUMNS="80", NO_COLOR="1")
    assert "…" not in out and "┃" in out  # a terminal's table
    lines = out[out.index(" labels ") :].splitlines()
    labels: dict[str, str] = {}
    for line in lines:
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) != 2:
            continue
        if cells[0]:
            label = cells[0]
            labels[label] = cells[1]
        else:
            labels[label] += cells[1]  # folded onto the next line: nothing lost
    assert max(len(line) for line in out.splitlines() if "│" in line) <= 80
    for src in load_spec(PLAN_ENV, arch="aarch64").spec.sources:
        assert labels[f"npubox.source.{src.name}"] == src.commit


def test_invoke_envs_piped_prints_each_description_whole():
    from llm.env.spec import env_names, load_spec

    proc = subprocess.run(
        [sys.executable, "-m", "invoke", "envs"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    rows = proc.stdout.splitlines()
    for name in env_names():
        description = load_spec(name).spec.description
        assert any(row.startswith(f"{name} ") and row.endswith(description) for row in rows), name


def test_no_stack_is_called_current_past_its_release_and_the_readme_says_what_comes_next():
    """MindSpeed-LLM's maintenance table at v26.1.0 (README.md, 2b7130ca): 26.1.0 is the current release, 26.0.0 is
    maintained until 2026-09-30; 26.1.0's MindSpeed has no release tag, so npubox cannot pin it yet."""
    from llm.env.spec import load_spec

    readme = (REPO / "README.md").read_text()
    spec = load_spec("ascend-mindspeed-llm-26.0.0")
    assert "current" not in spec.spec.description  # what `invoke envs` prints
    assert "current release and" not in spec.path.read_text()
    assert not re.search(r"26\.0\.0`\s*\(current\)|the current\s+MindSpeed-LLM release", readme)
    said = " ".join(readme[readme.index("## For Ascend users") :].split())
    for fact in (
        "its maintenance ends on 2026-09-30",
        "`README.md` at tag `v26.1.0`, commit `2b7130ca`",
        "26.1.0, released 2026-06-30, maintained until 2026-12-30",
        "only the branch `26.1.0_core_r0.12.1`",
        "When the tag `v26.1.0_core_r0.12.1` exists, npubox will add `ascend-mindspeed-llm-26.1.0`",
        "torch_npu 2.7.1.post8",
    ):
        assert fact in said, fact


@pytest.mark.parametrize("keep", [0, 0.5, -22], ids=["empty", "half", "no-end-record"])
def test_a_truncated_rank_file_is_named_as_truncated(tiny_checkpoint, tmp_path, keep):
    """torch's own errors for a cut file: "Invalid argument" (mmap of nothing) or advice about
    _use_new_zipfile_serialization, which the file was saved with."""
    import shutil

    load = tmp_path / "cut"
    shutil.copytree(tiny_checkpoint / "mcore", load)
    rank = load / "iter_0000001" / "mp_rank_00" / "model_optim_rng.pt"
    size = rank.stat().st_size
    kept = int(size * keep) if isinstance(keep, float) else (size + keep if keep else 0)
    with open(rank, "r+b") as f:
        f.truncate(kept)
    said = (
        f"error: {rank}: {kept:,} bytes, not a whole torch.save file (no zip directory at its end): it is truncated "
        "or not a checkpoint; save or copy it again"
    )
    evaluated, converted = _eval_and_convert_back(tiny_checkpoint, load, "tiny")
    for run in (evaluated, converted):
        assert run.returncode == 1 and run.stderr.strip().splitlines()[-1] == said, run.stderr[-2000:]


def test_invoke_run_hands_an_apostrophe_after_dashes_to_the_phase(monkeypatch):
    """`invoke run -- --verify "it's"` once split invoke's joined remainder with shlex: a ValueError traceback."""
    from invoke import Program

    sys.path.insert(0, str(REPO))
    try:
        import tasks
    finally:
        sys.path.remove(str(REPO))
    handed = []
    monkeypatch.setattr(
        tasks.commands, "run_phase", lambda env, model, phase, extra, *a, **k: handed.append(extra) or 0
    )
    argv = ["invoke", "run", "--phase", "env", "--", "--verify", "it's", "--note", 'a "b" c']
    monkeypatch.setattr(sys, "argv", argv)
    Program(namespace=tasks.ns).run(argv, exit=False)
    assert handed == [["--verify", "it's", "--note", 'a "b" c']]
