"""The mindspeed-llm engine starts from what `llm convert` wrote in the layout the stack's script trains (legacy for
ModelLink v1.0.RC1.0's qwen-7b script, megatron-core with --use-mcore-models), refuses the other layout before any
launch with the conversion to run, and `llm all` converts in the layout of the image's engine."""

from __future__ import annotations

import json

import pytest

from _mindspeed_fixtures import ML_RC1, V200, launch_ns, workspace_for
from llm import checkpoint
from llm.errors import NpuboxError
from llm.pretrain.mindspeed_llm.run import make_plan

torch = pytest.importorskip("torch")

# What each layout's rank files hold at their top (the tensors themselves are Megatron's loader's business).
LEGACY_MODEL = {"language_model": {"encoder": {"layers.0.input_norm.weight": None}}}
MCORE_MODEL = {"decoder.layers.0.input_layernorm.weight": None}


def with_rank_files(ws, model: str, tp: int, pp: int, state: dict):
    converted = ws.checkpoint_dir(model, f"hf-tp{tp}-pp{pp}")
    for pp_rank in range(pp):
        for tp_rank in range(tp):
            checkpoint.save_rank(converted, 1, tp_rank, pp_rank, pp, {"model": state})
    return converted


def test_modellink_starts_from_a_legacy_conversion(tmp_path):
    ws = workspace_for(tmp_path, "qwen-7b", 8, 1)
    converted = with_rank_files(ws, "qwen-7b", 8, 1, LEGACY_MODEL)
    plan, _ = make_plan(["--model", "qwen-7b", "--stack", ML_RC1], launch_ns(1, 0), devices=8, workspace=ws)
    argv = plan.composed.argv
    assert argv[argv.index("--load") + 1] == str(converted)
    assert {"--no-load-optim", "--no-load-rng"} <= set(argv) and "--use-mcore-models" not in argv


REFUSALS = {
    "ModelLink 1.0 qwen-7b, a megatron-core checkpoint": (
        "qwen-7b",
        ML_RC1,
        (8, 1),
        MCORE_MODEL,
        [
            "holds a megatron-core model, but examples/qwen/pretrain_qwen_7b_ptd.sh of ModelLink v1.0.RC1.0 trains "
            "Megatron's legacy model, which cannot load it",
            "python -m llm convert --model qwen-7b --format legacy --tp 8 --pp 1 --overwrite",
        ],
    ),
    "MindSpeed-LLM 2.0.0 qwen25-7b, a legacy checkpoint": (
        "qwen25-7b",
        V200,
        (4, 2),
        LEGACY_MODEL,
        [
            "holds Megatron's legacy model, but examples/mcore/qwen25/pretrain_qwen25_7b_32k_ptd.sh of MindSpeed-LLM "
            "2.0.0 trains a megatron-core model, which cannot load it",
            "--format mcore --tp 4 --pp 2 --overwrite",
        ],
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_checkpoint_of_the_other_layout_is_refused(tmp_path, case):
    model, commit, (tp, pp), found, words = REFUSALS[case]
    ws = workspace_for(tmp_path, model, tp, pp)
    with_rank_files(ws, model, tp, pp, found)
    with pytest.raises(NpuboxError) as e:
        make_plan(["--model", model, "--stack", commit], launch_ns(1, 0), devices=8, workspace=ws)
    for word in words:
        assert word in str(e.value)


@pytest.mark.parametrize(
    "source, commit, model, layout",
    [
        ("ModelLink", ML_RC1, "qwen-7b", "legacy"),
        ("MindSpeed-LLM", V200, "qwen25-7b", "mcore"),
        (None, None, "tiny", "mcore"),
    ],
)
def test_llm_all_converts_for_the_images_engine(tmp_path, monkeypatch, source, commit, model, layout):
    import llm.runtime_report
    from llm.all_phases import plan
    from llm.workspace import Workspace

    baked = tmp_path / "spec.json"
    if source:
        engine = {"engine": "mindspeed-llm", "sources": [{"name": source, "commit": commit, "install": "pythonpath"}]}
        baked.write_text(json.dumps({"tag": "t", "pins": {}, "spec": engine}))
    monkeypatch.setattr(llm.runtime_report, "BAKED_SPEC", baked)  # no file: not an npubox image (the mcore engine)
    convert = next(step for step in plan(model, Workspace(tmp_path / "ws"), 10) if step.phase == "convert")
    assert convert.argv[convert.argv.index("--format") + 1] == layout
