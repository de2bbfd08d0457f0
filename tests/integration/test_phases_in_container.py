"""The phases in the sealed CPU container: the whole pipeline, then single phases re-run on its
workspace, exactly as `invoke run` does them."""

import json

import pytest

from .conftest import invoke


@pytest.fixture(scope="module")
def pipeline_workspace(cpu_image, tmp_path_factory):
    ws = tmp_path_factory.mktemp("pipeline") / "workspace"
    ws.mkdir()
    proc = invoke("run", "--model", "tiny", "--phase", "all", "--workspace", str(ws), "--", "--train-iters", "20")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return ws, proc


def test_whole_pipeline_runs_sealed_and_summarises(pipeline_workspace):
    ws, proc = pipeline_workspace
    assert "docker run --rm --init --network none --read-only" in proc.stderr
    summary = proc.stdout[proc.stdout.index("npubox pipeline: tiny"):]
    for phase in ("sample", "convert", "preprocess", "pretrain", "convert back", "eval mmlu", "eval ceval", "eval boolq"):
        assert phase in summary
    assert (ws / "checkpoints/tiny/pretrain/latest_checkpointed_iteration.txt").read_text().strip() == "20"
    assert (ws / "models/tiny/pretrained-hf/model.safetensors.index.json").is_file()
    for task in ("mmlu", "ceval", "boolq"):
        result = json.loads((ws / f"eval/tiny/{task}.json").read_text())
        assert 0.0 <= result["accuracy"] <= 1.0 and result["overall"]["total"] > 0
    metrics = [json.loads(line) for line in (ws / "logs/pretrain-tiny.jsonl").read_text().splitlines()]
    assert len([m for m in metrics if "loss" in m]) == 20


def test_preprocess_phase_alone(pipeline_workspace):
    ws, _ = pipeline_workspace
    out = ws / "data/tiny/sample_text_document"
    for suffix in (".bin", ".idx"):
        out.with_suffix(suffix).unlink()
    proc = invoke("run", "--model", "tiny", "--phase", "preprocess", "--workspace", str(ws))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.with_suffix(".idx").read_bytes()[:9] == b"MMIDIDX\x00\x00"
    assert out.with_suffix(".bin").stat().st_size > 0


def test_convert_phase_alone(pipeline_workspace):
    ws, _ = pipeline_workspace
    proc = invoke("run", "--model", "tiny", "--phase", "convert", "--workspace", str(ws), "--", "--tp", "2", "--pp", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = ws / "checkpoints/tiny/hf-tp2-pp2"
    assert (out / "latest_checkpointed_iteration.txt").read_text().strip() == "1"
    ranks = sorted(p.name for p in (out / "iter_0000001").iterdir())
    assert ranks == ["mp_rank_00_000", "mp_rank_00_001", "mp_rank_01_000", "mp_rank_01_001"]
