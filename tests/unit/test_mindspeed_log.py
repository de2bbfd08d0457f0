"""The mindspeed-llm engine's log: Megatron's iteration lines of each pinned version, parsed into the metrics JSONL
and progress output that the mcore engine writes, live from a torchrun it starts."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from _example_scripts import extract_archive, source_archive
from _pretrain_fixtures import REPO, env_for, free_port, write_dataset
from llm.pretrain.mindspeed_llm.megatron_log import parse_line

# The line each version prints, copied from the version's own training_log with the values below (the date and the
# time per iteration are the run's); the first two are what test_the_pinned_megatron_prints_these_lines makes.
LINES = {
    # Megatron-LM core_r0.8.0 (baf94af) megatron/training/training.py training_log
    "core_r0.8.0": " [2026-11-30 09:26:42] iteration       10/    2000 | consumed samples:          640 | elapsed time "
    "per iteration (ms): 51.5 | throughput per GPU (TFLOP/s/GPU): 0.0 | learning rate: 1.250000E-06 | "
    "global batch size:     8 | lm loss: 1.602336E+00 | loss scale: 1.0 | grad norm: 1.234 | number of "
    "skipped iterations:   0 | number of nan iterations:   0 |",
    # Megatron-LM core_v0.12.1 (a845aa7) megatron/training/training.py training_log
    "core_v0.12.1": " [2026-11-30 09:26:47] iteration       10/    2000 | consumed samples:          640 | elapsed "
    "time per iteration (ms): 53.3 | throughput per GPU (TFLOP/s/GPU): 0.0 | learning rate: "
    "1.250000E-06 | global batch size:     8 | lm loss: 1.602336E+00 | loss scale: 1.0 | grad norm: "
    "1.234 | number of skipped iterations:   0 | number of nan iterations:   0 |",
    # Megatron-LM bcce6f (ModelLink 1.0) megatron/training.py training_log: no date, learning rate {:.3E}
    "bcce6f": " iteration       10/    2000 | consumed samples:          640 | elapsed time per iteration (ms): 51.5 | "
    "throughput per GPU (TFLOP/s/GPU): 0.0 | learning rate: 1.250E-06 | global batch size:     8 | lm loss: "
    "1.602336E+00 | loss scale: 1.0 | grad norm: 1.234 | number of skipped iterations:   0 | number of nan "
    "iterations:   0 |",
    # MindSpeed-LLM 2.3.0 (1bdd9700) / 26.0.0 (57c33296) mindspeed_llm/training/training.py training_log: adds
    # "core attn ratio (%)" after the throughput; torchrun --tee prefixes the rank
    "MindSpeed-LLM 2.3.0": "[default7]: [2026-11-30 09:26:47] iteration       10/    2000 | consumed samples:          "
    "640 | elapsed time per iteration (ms): 51.5 | throughput per GPU (TFLOP/s/GPU): 0.0 | core "
    "attn ratio (%): 100.0 | learning rate: 1.250000E-06 | global batch size:     8 | lm loss: "
    "1.602336E+00 | loss scale: 1.0 | grad norm: 1.234 | number of skipped iterations:   0 | "
    "number of nan iterations:   0 |",
}
# MindSpeed 26.0.0 (0ed973d) mindspeed/functional/tflops_calculate/adaptor.py training_log (--op-cal-tflops): the
# device's own count first; a skipped fp16 step (loss scale halved, no grad norm).
MINDSPEED_TFLOPS = (
    " [2026-11-30 09:26:47] iteration        3/    2000 | consumed samples:          192 | elapsed time "
    "per iteration (ms): 5213.4 | theoretical throughput per NPU (TFLOP/s/NPU): 190.2 | actual "
    "throughput per NPU (TFLOP/s/NPU): 201.7 | actual throughput per NPU with recompute (TFLOP/s/NPU): "
    "250.1 | learning rate: 1.250000E-06 | global batch size:    64 | loss scale: 32768.0 | number of "
    "skipped iterations:   1 | number of nan iterations:   0 |"
)


@pytest.mark.parametrize("version", list(LINES))
def test_each_versions_line(version):
    log = parse_line(LINES[version])
    assert (log.iteration, log.train_iters, log.consumed_samples, log.global_batch_size) == (10, 2000, 640, 8)
    assert log.loss == 1.602336 and log.losses == {"lm loss": 1.602336}
    assert log.learning_rate == 1.25e-6 and log.grad_norm == 1.234 and log.loss_scale == 1.0
    assert log.elapsed_ms in (51.5, 53.3) and log.tflops_per_device == 0.0
    assert (log.skipped_iterations, log.nan_iterations) == (0, 0)


def test_mindspeeds_own_tflops_and_a_skipped_step():
    log = parse_line(MINDSPEED_TFLOPS)
    assert log.tflops_per_device == 201.7  # the device's own count, not the model's theoretical one
    assert log.loss is None and log.grad_norm is None and log.skipped_iterations == 1 and log.loss_scale == 32768


@pytest.mark.parametrize(
    "line",
    [
        "  iterations_to_skip .............................. []",
        "building GPT model ...",
        " > number of iteration 10/2000 is done",
        "",
    ],
)
def test_other_lines_are_not_iterations(line):
    assert parse_line(line) is None


@pytest.mark.parametrize(
    "commit, version",
    [
        ("baf94af3c667248865f23df73b9fb8e2395e6fd0", "core_r0.8.0"),
        ("a845aa7e12b3a117e24c2352b9e3e60bad2e3a17", "core_v0.12.1"),
    ],
)
@pytest.mark.sources
def test_the_pinned_megatron_prints_these_lines(commit, version, tmp_path):
    """Make the line with the pinned Megatron-LM's own training_log (in a subprocess, its tree first on the path)."""
    extract_archive(source_archive("Megatron-LM", commit), tmp_path)
    tree = tmp_path / f"Megatron-LM-{commit}"
    env = env_for(tmp_path, PYTHONPATH=f"{tree}:{REPO}")
    probe = subprocess.run(
        [sys.executable, "-c", "import megatron.training.training"], cwd=tree, env=env, capture_output=True, text=True
    )
    if probe.returncode:
        pytest.skip(f"Megatron-LM {version} does not import here: {probe.stderr.strip().splitlines()[-1]}")
    out = subprocess.run(
        [sys.executable, str(REPO / "tests/unit/_megatron_training_log.py"), str(free_port())],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = next(line for line in out.stdout.splitlines() if parse_line(line))
    ours, theirs = parse_line(line), parse_line(LINES[version])
    assert {k: v for k, v in ours.fields.items() if k != "elapsed time per iteration (ms)"} == {
        k: v for k, v in theirs.fields.items() if k != "elapsed time per iteration (ms)"
    }
    assert line.split("]", 1)[1].split("elapsed")[0] == LINES[version].split("]", 1)[1].split("elapsed")[0]


STAND_IN = r'''"""Stand-in for pretrain_gpt.py: records how torchrun started it and prints Megatron's lines."""
import json, os, sys
with open(os.environ["RECORD"], "w") as f:
    json.dump({"argv": sys.argv[1:], "cwd": os.getcwd(), "rank": os.environ["RANK"],
               "CUDA_DEVICE_MAX_CONNECTIONS": os.environ.get("CUDA_DEVICE_MAX_CONNECTIONS")}, f)
print("building GPT model ...", flush=True)
for line in json.loads(os.environ["LINES"]):
    print(line, flush=True)
'''


def test_pretrain_runs_the_program_under_torchrun_and_logs_its_lines(tmp_path):
    """`python -m llm pretrain` with the mindspeed-llm engine: torchrun starts the program with the composed flags
    in the source tree, and each iteration line becomes a metrics record (the JSONL that `llm all` reads)."""
    write_dataset(tmp_path / "data" / "qwen25-7b" / "sample_text_document", count=2)
    source = tmp_path / "MindSpeed-LLM"
    source.mkdir()
    (source / "pretrain_gpt.py").write_text(STAND_IN)
    lines = [
        LINES["core_r0.8.0"].replace("    10/", f"{i:>8}/").replace("1.602336E+00", f"{3 - 0.5 * i:.6E}")
        for i in (1, 2, 3)
    ] + [MINDSPEED_TFLOPS.replace("       3/", "       4/")]
    metrics = tmp_path / "logs" / "pretrain-qwen25-7b.jsonl"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "llm",
            "pretrain",
            "--engine",
            "mindspeed-llm",
            "--model",
            "qwen25-7b",
            "--stack",
            "3a712f58",
            "--source-dir",
            str(source),
            "--tp",
            "1",
            "--pp",
            "1",
            "--global-batch-size",
            "8",
            "--no-progress",
        ],
        cwd=REPO,
        env=env_for(tmp_path, RECORD=str(tmp_path / "record.json"), LINES=json.dumps(lines), NPUBOX_DEVICE="cpu"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    record = json.loads((tmp_path / "record.json").read_text())
    assert record["cwd"] == str(source) and record["rank"] == "0" and record["CUDA_DEVICE_MAX_CONNECTIONS"] == "1"
    argv = record["argv"]
    assert argv[argv.index("--tensor-model-parallel-size") + 1] == "1"
    assert argv[argv.index("--data-path") + 1] == str(tmp_path / "data" / "qwen25-7b" / "sample_text_document")
    assert "building GPT model ..." in out.stdout  # the engine's output is shown
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1, 2, 3]  # the skipped step (no loss) is not a record
    assert [r["loss"] for r in records] == [2.5, 2.0, 1.5]
    first = records[0]
    assert first["step_time_s"] == 0.0515 and first["grad_norm"] == 1.234 and first["loss_scale"] == 1.0
    assert first["tokens_per_s_per_device"] == pytest.approx(8 * 4096 / 0.0515)  # world size 1
    assert first["mfu"] is None and first["skipped_iterations"] == 0 and first["consumed_samples"] == 640
    assert "iter      3/2000 | loss 1.500000" in out.stdout  # the mcore engine's own line, too

    from llm.all_phases import _final_loss
    from llm.workspace import Workspace

    assert _final_loss(Workspace(tmp_path), "qwen25-7b") == "loss 2.500 → 1.500 over 3 steps"
