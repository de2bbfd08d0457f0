"""The CPU twin of a MindFormers stack (1.8.0 by default; issue 20, acceptance 2 and 3), sealed, every phase
driving the stack's own tools from the pinned mindformers source in ../shared/sources:

sample (tiny-qwen2: Qwen2's vocabulary size and special ids) -> convert_weight.py (logits equal transformers') ->
alpaca_converter.py + qwen2_5_preprocess.py (MindRecord) -> run_mindformer.py, one worker and then two msrun
workers in data parallel (falling loss) -> MindFormers' reverse converter -> npubox's eval of the HF model.

    NPUBOX_MINDFORMERS_TWIN_ENV=ascend-mindformers-1.3.2 pytest tests/integration/test_twin_mindformers.py
"""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from llm.env import commands, container
from llm.env.engine import inspect_image
from llm.env.twin import make_twin

from .conftest import MINDFORMERS_TWIN_ENV, REPO, invoke

ENV = MINDFORMERS_TWIN_ENV
MODEL = "tiny-qwen2"
STEPS = 12
DP_STEPS = 5  # the two-worker run: data parallel works and trains; the loss curve is the one-worker run's to show
pytestmark = pytest.mark.twin


def _run(ws: Path, phase: str, *extra: str) -> subprocess.CompletedProcess:
    args = ["run", "--env", ENV, "--twin", "cpu", "--model", MODEL, "--phase", phase, "--workspace", str(ws)]
    proc = invoke(*args, "--", *extra)
    assert proc.returncode == 0, f"{phase} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def _losses(ws: Path) -> list[dict]:
    path = ws / "logs" / f"pretrain-{MODEL}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


@pytest.fixture(scope="module")
def pipeline(mindformers_twin_image, tmp_path_factory) -> dict:
    """Each phase as a user runs it (`invoke run --phase ...`), in one workspace; what each printed."""
    ws = tmp_path_factory.mktemp("mindformers") / "workspace"
    ws.mkdir()
    if os.geteuid() == 0:
        os.chown(ws, 1234, 1234)
    out = {"ws": ws}
    out["sample"] = _run(ws, "sample")
    out["convert"] = _run(ws, "convert")
    out["preprocess"] = _run(ws, "preprocess")
    out["pretrain"] = _run(ws, "pretrain", "--train-iters", str(STEPS))
    out["one_worker"] = _losses(ws)
    trained_dp = f"/workspace/checkpoints/{MODEL}/mindformers-dp2"
    out["pretrain_dp2"] = _run(ws, "pretrain", "--workers", "2", "--save", trained_dp, "--train-iters", str(DP_STEPS))
    out["two_workers"] = _losses(ws)[len(out["one_worker"]) :]
    out["convert_back"] = _run(
        ws, "convert", "--from", "mindspore", "--to", "hf", "--load-dir", f"/workspace/checkpoints/{MODEL}/mindformers"
    )
    from llm.eval.sample_sets import write_sample_sets

    write_sample_sets(ws / "eval")
    if os.geteuid() == 0:
        for root, dirs, files in os.walk(ws / "eval"):
            for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.chown(name, 1234, 1234)
    hf = f"/workspace/models/{MODEL}/pretrained-hf"
    out["eval"] = _run(ws, "eval", "--task", "mmlu", "--hf-dir", hf, "--output", "/workspace/eval/mmlu.json")
    return out


def test_the_twin_verifies_itself_with_mindspores_run_check_and_the_version_map(mindformers_twin_image, workspace):
    args = ["run", "--env", ENV, "--twin", "cpu", "--phase", "env", "--workspace", str(workspace)]
    proc = invoke(*args, "--", "--verify")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok: mindspore.run_check() on CPU: MindSpore has been installed on platform [CPU] success" in proc.stdout
    assert f"ok: matches {mindformers_twin_image}" in proc.stdout


def test_the_twin_passes_testinfra(mindformers_twin_image):
    proc = invoke("check", "--env", ENV, "--twin", "cpu")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " failed" not in proc.stdout


def test_labels_name_the_cpu_backend_and_each_shim(mindformers_twin_image):
    labels = inspect_image(mindformers_twin_image)["Config"]["Labels"]
    differences = labels["npubox.twin.differences"]
    assert "runs its CPU backend" in differences and differences.count("CPU shim: ") == 2
    assert labels["npubox.source.mindformers"] == make_twin(commands.load_spec(ENV)).spec.sources[0].commit


def test_the_stacks_converter_gives_transformers_logits(pipeline):
    ws = pipeline["ws"]
    ckpt = ws / f"checkpoints/{MODEL}/mindspore/{MODEL}.ckpt"
    assert ckpt.is_file() and "convert_weight.py --model" in pipeline["convert"].stderr
    opts = commands.run_options(make_twin(commands.load_spec(ENV)), ws)
    proc = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            *container.sealed_flags(opts),
            "--mount",
            f"type=bind,source={REPO}/tests/integration,target=/opt/npubox/tests,readonly",
            "--env",
            "PYTHONPATH=/opt/npubox/sources/mindformers",
            opts.image,
            "python",
            "/opt/npubox/tests/mindformers_logits.py",
            f"/workspace/models/{MODEL}/hf",
            f"/workspace/checkpoints/{MODEL}/mindspore/{MODEL}.ckpt",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    worst = float(re.search(r"max \|logits difference\| (\S+)", proc.stdout).group(1))
    print(f"max |logits difference| against transformers: {worst:.2e}")
    assert worst <= 1e-4


def test_preprocess_writes_mindrecord_with_the_stacks_scripts(pipeline):
    data = pipeline["ws"] / f"data/{MODEL}/alpaca-mindrecord"
    assert sorted(p.name for p in data.iterdir()) == ["alpaca-messages.mindrecord", "alpaca-messages.mindrecord.db"]
    err = pipeline["preprocess"].stderr
    assert "alpaca_converter.py --data_path" in err and "preprocess.py --dataset_type qa" in err


def test_the_stacks_trainer_lowers_the_loss(pipeline):
    records = pipeline["one_worker"]
    assert [r["iteration"] for r in records] == list(range(1, STEPS + 1))
    first, last = records[0]["loss"], sum(r["loss"] for r in records[-3:]) / 3
    print(f"one worker: loss {first:.3f} -> {last:.3f} over {len(records)} steps")
    assert last < first - 0.2
    ckpts = list((pipeline["ws"] / f"checkpoints/{MODEL}/mindformers/checkpoint/rank_0").glob("*.ckpt"))
    assert ckpts, "the trainer saved no checkpoint"
    assert "run_mindformer.py" in pipeline["pretrain"].stderr or "run_qwen2.py" in pipeline["pretrain"].stderr


def test_two_msrun_workers_train_data_parallel(pipeline):
    records = pipeline["two_workers"]
    assert [r["iteration"] for r in records] == list(range(1, DP_STEPS + 1))
    assert sum(r["loss"] for r in records[-3:]) / 3 < records[0]["loss"] - 0.2
    trained = pipeline["ws"] / f"checkpoints/{MODEL}/mindformers-dp2/checkpoint"
    assert sorted(p.name for p in trained.iterdir()) == ["rank_0", "rank_1"]  # one checkpoint a worker
    logs = pipeline["ws"] / f"logs/msrun-{MODEL}"
    assert (logs / "worker_1.log").is_file() and "msrun --" in pipeline["pretrain_dp2"].stderr
    assert "--worker_num=2 --local_worker_num=2" in pipeline["pretrain_dp2"].stderr


def test_converted_back_and_evaluated(pipeline):
    hf = pipeline["ws"] / f"models/{MODEL}/pretrained-hf"
    assert {"config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer.json"} <= {
        p.name for p in hf.iterdir()
    }
    from safetensors import safe_open

    with (
        safe_open(hf / "model.safetensors", "np") as trained,
        safe_open(pipeline["ws"] / f"models/{MODEL}/hf/model.safetensors", "np") as start,
    ):
        assert sorted(trained.keys()) == sorted(start.keys())
        moved = [k for k in trained.keys() if abs(trained.get_tensor(k) - start.get_tensor(k)).max() > 0]
    assert moved, "training changed no weight"
    result = json.loads((pipeline["ws"] / "eval/mmlu.json").read_text())
    assert result["overall"]["total"] > 0
