"""Golden tests of the mindspeed-llm engine: for each (stack, model) whose example script the engine reproduces, the
flags it composes for pretrain_gpt.py equal the script's flags as a set with values, and its torchrun options equal
the script's DISTRIBUTED_ARGS, for 1 and 2 nodes. The scripts are read from the pinned sources in
../shared/sources, with only what a user edits replaced: the paths, and the knobs the case names."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from _example_scripts import SOURCES, flag_differences, flag_map, parse_script, read_member, source_archive
from _mindspeed_fixtures import ML_MASTER, ML_RC1, V200, V230, V2600, launch_ns, torchrun_options, workspace_for
from llm.errors import NpuboxError
from llm.pretrain.mindspeed_llm.run import make_plan, render
from llm.pretrain.mindspeed_llm.scripts import STACKS
from llm.recipes import load_recipe
from llm.torchrun import build_parser as launch_parser

# (stack commit, model, what the user edits in the script, our extra arguments, nodes to launch)
CASES = {
    # MindSpeed-LLM 2.0.0's Qwen2.5-7B guide: the script with SEQ_LEN=4096 (its TP4 PP2 MBS1 GBS64 are the script's own)
    "2.0.0 qwen25-7b (Qwen2.5 guide)": (V200, "qwen25-7b", {"SEQ_LEN": "4096"}, [], (1, 2)),
    # 2.3.0: the same script; the recipe's sequence length is the 2.0.0 guide's 4096 ...
    "2.3.0 qwen25-7b": (V230, "qwen25-7b", {"SEQ_LEN": "4096"}, [], (1, 2)),
    # ... and with --seq-length 32768 the script as shipped
    "2.3.0 qwen25-7b 32k": (V230, "qwen25-7b", {}, ["--seq-length", "32768"], (1, 2)),
    # TP8 x PP4 x CP4 = 128 processes: the script's 16 nodes (1 or 2 nodes cannot hold it)
    "2.3.0 qwen25-72b": (V230, "qwen25-72b", {}, [], (16, 32)),
    # 26.0.0 ships no qwen25 script but the 72B's
    "26.0.0 qwen25-72b": (V2600, "qwen25-72b", {}, [], (16, 32)),
    # ModelLink v1.0.RC1.0 examples/qwen (its Qwen guide)
    "ModelLink 1.0 qwen-7b (Qwen guide)": (ML_RC1, "qwen-7b", {}, [], (1, 2)),
    # ModelLink master at the date of its Aquila2 guide, examples/aquila2/README.md (not in v1.0.RC1.0)
    "ModelLink 17b97452 qwen-7b": (ML_MASTER, "qwen-7b", {}, [], (1, 2)),
    "ModelLink 17b97452 aquila2-7b (Aquila2 guide)": (ML_MASTER, "aquila2-7b", {}, [], (1, 2)),
}
# The Aquila2 script sets CKPT_SAVE_DIR but passes no --save; its guide (examples/aquila2/README.md) says to pass
# --save to keep the trained weights, which npubox always does (checkpoints/<model>/pretrain, read by `llm convert`
# back to HF).
SAVES_THOUGH_THE_SCRIPT_DOES_NOT = {"ModelLink 17b97452 aquila2-7b (Aquila2 guide)"}


@pytest.fixture(scope="module")
def scripts(tmp_path_factory):
    """The example scripts' text, extracted from the archives of ../shared/sources (None: archive absent)."""
    dest = tmp_path_factory.mktemp("sources")
    out = {}
    for name, (commit, model, _, _, _) in CASES.items():
        stack = STACKS[commit]
        if not source_archive("MindSpeed-LLM", commit).is_file():
            out[name] = None
            continue
        out[name] = read_member("MindSpeed-LLM", commit, stack.scripts[model].path, dest)
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_flags_and_torchrun_equal_the_example_script(case, scripts, tmp_path, monkeypatch):
    commit, model, edits, extra, node_counts = CASES[case]
    if scripts[case] is None:
        why = (
            ": the ModelLink commit whose examples/aquila2 README is the Aquila2 guide is not among the pinned sources"
        )
        pytest.skip(
            f"{source_archive('MindSpeed-LLM', commit).name} is not in {SOURCES}" + (why if commit == ML_MASTER else "")
        )
    recipe = load_recipe(model)
    tp, pp = recipe.defaults("pretrain").tp, recipe.defaults("pretrain").pp
    ws = workspace_for(tmp_path, model, tp, pp)
    for key in ("CUDA_DEVICE_MAX_CONNECTIONS", "HCCL_CONNECT_TIMEOUT", "NPU_ASD_ENABLE", "WITHOUT_JIT_COMPILE"):
        monkeypatch.delenv(key, raising=False)

    for nnodes in node_counts:
        for node_rank in sorted({0, nnodes - 1}):
            plan, _ = make_plan(
                ["--model", model, "--stack", commit, "--source-dir", str(tmp_path / "src"), *extra],
                launch_ns(nnodes, node_rank),
                devices=8,
                workspace=ws,
            )
            paths = {
                "CKPT_LOAD_DIR": str(ws.checkpoint_dir(model, f"hf-tp{tp}-pp{pp}")),
                "CKPT_SAVE_DIR": str(ws.checkpoint_dir(model, "pretrain")),
                "DATA_PATH": f"{ws.dataset_prefix(model)}_text_document",
                "TOKENIZER_PATH": str(ws.hf_dir(model)),
                "TOKENIZER_MODEL": str(ws.hf_dir(model)),
            }
            script = parse_script(
                scripts[case],
                {**edits, **paths, "NNODES": str(nnodes), "NODE_RANK": str(node_rank), "MASTER_ADDR": "10.1.2.3"},
            )

            ours = flag_map(plan.composed.argv)
            if case in SAVES_THOUGH_THE_SCRIPT_DOES_NOT:
                assert "--save" not in script.flags and "CKPT_SAVE_DIR" in script.variables
                del ours["--save"]
            assert flag_differences(ours, script.flags) == []
            program_at = plan.torchrun_args.index(str(plan.program))
            assert plan.torchrun_args[program_at + 1 :] == plan.composed.argv
            assert script.program == "pretrain_gpt.py" and plan.program.name == "pretrain_gpt.py"
            assert torchrun_options(plan.torchrun_args[:program_at]) == torchrun_options(script.torchrun_args)
            assert plan.world_size == 8 * nnodes
            for key, value in script.exports.items():  # what the script exports, the workers get
                assert plan.env[key] == value, key


def test_dry_run_prints_one_flag_a_line(scripts, tmp_path, monkeypatch):
    ws = workspace_for(tmp_path, "qwen25-7b", 4, 2)
    plan, _ = make_plan(
        ["--model", "qwen25-7b", "--stack", V200, "--source-dir", "/src/MindSpeed-LLM"],
        launch_ns(1, 0),
        devices=8,
        workspace=ws,
    )
    text = render(plan)
    lines = text.splitlines()
    assert lines[1] == "cd /src/MindSpeed-LLM"
    flag_lines = [line.strip().removesuffix(" \\") for line in lines if line.startswith("    --")]
    assert [line.split()[0] for line in flag_lines] == [a for a in plan.composed.argv if a.startswith("--")]
    assert "    --tensor-model-parallel-size 4 \\" in lines and "    --seq-length 4096 \\" in lines
    assert any(line.startswith("CUDA_DEVICE_MAX_CONNECTIONS=1 ") for line in lines)
    assert "  /src/MindSpeed-LLM/pretrain_gpt.py \\" in lines
    assert lines[-1].startswith("    --") and not lines[-1].endswith("\\")


def plan_for(tmp_path, model: str, commit: str, *argv: str, nnodes: int = 1, devices: int = 8):
    recipe = load_recipe(model)
    ws = workspace_for(tmp_path, model, recipe.defaults("pretrain").tp, recipe.defaults("pretrain").pp)
    ns = launch_parser().parse_args(["--nproc", str(devices), "--nnodes", str(nnodes), "pretrain"])
    plan, _ = make_plan(["--model", model, "--stack", commit, *argv], ns, devices=devices, workspace=ws)
    return plan, ws


def test_user_overrides_replace_the_scripts_values(tmp_path):
    plan, ws = plan_for(
        tmp_path,
        "qwen25-7b",
        V230,
        "--lr",
        "3e-5",
        "--train-iters",
        "50",
        "--warmup",
        "5",
        "--fp32",
        "--seed",
        "7",
        "--save-interval",
        "10",
        "--exit-interval",
        "20",
        "--no-distributed-optimizer",
        "--",
        "--recompute-granularity",
        "full",
        "--seed",
        "8",
    )
    flags = flag_map(plan.composed.argv)
    assert flags["--lr"] == ("3e-05",) and flags["--train-iters"] == ("50",) and flags["--save-interval"] == ("10",)
    assert flags["--lr-warmup-iters"] == ("5",) and "--lr-warmup-fraction" not in flags
    assert "--bf16" not in flags and "--fp16" not in flags
    assert flags["--exit-interval"] == ("20",) and "--use-distributed-optimizer" not in flags
    assert flags["--seed"] == ("8",)  # a passed-through flag replaces the composed one
    assert flags["--recompute-granularity"] == ("full",)
    assert plan.composed.argv.count("--seed") == 1


def test_resume_loads_our_own_saves_with_the_scripts_load_flags(tmp_path):
    plan, ws = plan_for(tmp_path, "qwen25-7b", V200)
    save = ws.checkpoint_dir("qwen25-7b", "pretrain")
    save.mkdir(parents=True)
    (save / "latest_checkpointed_iteration.txt").write_text("100")
    plan, _ = plan_for(tmp_path / "again", "qwen25-7b", V200, "--save", str(save))
    flags = flag_map(plan.composed.argv)
    assert flags["--load"] == (str(save),) == flags["--save"]
    assert {"--no-load-optim", "--no-load-rng"} <= set(flags)


def test_no_converted_checkpoint_means_no_load(tmp_path):
    plan, ws = plan_for(tmp_path, "qwen25-7b", V200)
    (ws.checkpoint_dir("qwen25-7b", "hf-tp4-pp2") / "latest_checkpointed_iteration.txt").unlink()
    plan, _ = make_plan(["--model", "qwen25-7b", "--stack", V200], launch_ns(1, 0), devices=8, workspace=ws)
    assert "--load" not in plan.composed.argv and "--no-load-optim" not in plan.composed.argv


@pytest.mark.parametrize(
    "model, commit, argv, devices, words",
    [
        ("aquila2-7b", ML_RC1, [], 8, ["ModelLink v1.0.RC1.0", "no example pretrain script for aquila2-7b", "qwen-7b"]),
        ("qwen25-7b", "0123456789abcdef", [], 8, ["'0123456789abcdef'", "not a stack", "MindSpeed-LLM 2.0.0 3a712f58"]),
        ("qwen25-7b", V200, [], 4, ["4 processes cannot hold tp 4 × pp 2 × cp 1 = 8"]),
        ("qwen25-7b", V200, ["--keep-last", "2"], 8, ["--keep-last is not an option"]),
        ("qwen25-7b", V200, ["--global-batch-size", "3"], 16, ["--global-batch-size 3", "data-parallel size 2"]),
        ("qwen25-72b", V230, ["--pp", "2"], 256, ["over 4 pipeline stages", "--pp is 2"]),
        ("qwen-7b", ML_RC1, ["--tp", "16"], 16, ["pads qwen-7b's vocabulary to 152064 rows", "writes 151936"]),
    ],
)
def test_what_the_engine_refuses(tmp_path, model, commit, argv, devices, words):
    with pytest.raises(NpuboxError) as e:
        plan_for(tmp_path, model, commit, *argv, devices=devices)
    for word in words:
        assert word in str(e.value)


def test_the_stack_comes_from_the_baked_spec(tmp_path, monkeypatch):
    import json

    import llm.runtime_report

    baked = tmp_path / "spec.json"
    baked.write_text(
        json.dumps(
            {
                "tag": "t",
                "pins": {},
                "spec": {
                    "engine": "mindspeed-llm",
                    "sources": [
                        {
                            "name": "MindSpeed",
                            "commit": "dc83a031a2653341be1690013c11cfbf556155c5",
                            "install": "editable",
                        },
                        {"name": "MindSpeed-LLM", "commit": V200, "install": "pythonpath"},
                    ],
                },
            }
        )
    )
    monkeypatch.setattr(llm.runtime_report, "BAKED_SPEC", baked)
    monkeypatch.setenv("NPUBOX_SOURCES", "/images/sources")
    from llm.pretrain import split_engine

    assert split_engine(["--model", "qwen25-7b"]) == ("mindspeed-llm", ["--model", "qwen25-7b"])
    assert split_engine(["--engine", "mcore", "--model", "x"]) == ("mcore", ["--model", "x"])
    ws = workspace_for(tmp_path, "qwen25-7b", 4, 2)
    plan, _ = make_plan(["--model", "qwen25-7b"], launch_ns(1, 0), devices=8, workspace=ws)
    assert plan.stack.commit == V200
    assert str(plan.source_dir).endswith("MindSpeed-LLM")


def test_launch_dry_run_from_the_command_line(tmp_path):
    import sys

    from _pretrain_fixtures import REPO, env_for

    workspace_for(tmp_path, "qwen-7b", 8, 1)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "llm",
            "launch",
            "--nproc",
            "8",
            "--nnodes",
            "2",
            "--node-rank",
            "1",
            "--master-addr",
            "10.0.0.9",
            "--dry-run",
            "pretrain",
            "--model",
            "qwen-7b",
            "--engine",
            "mindspeed-llm",
            "--stack",
            ML_RC1,
            "--source-dir",
            "/src/ModelLink",
        ],
        cwd=REPO,
        env=env_for(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    assert "  --nnodes=2 \\" in lines and "  --node-rank=1 \\" in lines and "  --master-addr=10.0.0.9 \\" in lines
    assert "    --tokenizer-kwargs eos_token '<|endoftext|>' pad_token '<|extra_0|>' \\" in lines
    assert "NPU_ASD_ENABLE=0 \\" in lines
    assert os.path.join("/src/ModelLink", "pretrain_gpt.py") in out.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("case", list(CASES))
def test_the_reader_reads_each_script_as_bash_does(case, scripts, tmp_path):
    if scripts[case] is None:
        pytest.skip(f"{source_archive('MindSpeed-LLM', CASES[case][0]).name} is not in {SOURCES}")
    stubbed = tmp_path / "script.sh"  # torchrun prints its arguments one a line; tee passes through
    stubbed.write_text("torchrun() { printf '%s\\n' \"$@\"; }\ntee() { cat; }\n" + scripts[case])
    words = subprocess.run(["bash", str(stubbed)], capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    words = words.splitlines()
    script = parse_script(scripts[case])
    program_at = words.index("pretrain_gpt.py")
    assert words[:program_at] == script.torchrun_args
    assert flag_map(words[program_at + 1 :]) == script.flags


def test_launch_keeps_engine_mcore_for_its_workers(tmp_path, monkeypatch):
    """On an image whose spec names mindspeed-llm, `llm launch pretrain --engine mcore` runs our loop: each worker
    gets the --engine mcore it was given (and so does not pick the spec's engine)."""
    import json
    import sys

    from _pretrain_fixtures import REPO, env_for

    baked = tmp_path / "spec.json"
    baked.write_text(json.dumps({"tag": "t", "pins": {}, "spec": {"engine": "mindspeed-llm", "sources": []}}))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "llm",
            "launch",
            "--nproc",
            "2",
            "--dry-run",
            "pretrain",
            "--model",
            "tiny",
            "--engine",
            "mcore",
        ],
        cwd=REPO,
        env=env_for(tmp_path, NPUBOX_BAKED_SPEC=str(baked)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "-m llm pretrain --model tiny --engine mcore" in out.stderr


def test_a_legacy_model_script_refuses_a_megatron_core_checkpoint(tmp_path):
    """ModelLink 1.0's qwen-7b script trains Megatron's legacy model: a checkpoint `llm convert` wrote
    (megatron-core keys) is refused before any launch, not left to fail on the cards."""
    import torch

    from llm import checkpoint
    from llm.convert.mcore import checkpoint_layout
    from llm.pretrain.mindspeed_llm import scripts as mindspeed_llm

    legacy = tmp_path / "legacy"
    checkpoint.save_rank(legacy, 1, 0, 0, 1, {"model": {"language_model.encoder.final_norm.weight": torch.ones(2)}})
    checkpoint.write_latest(legacy, 1)
    assert getattr(checkpoint_layout(str(legacy)), "name", None) != "mcore"
    assert "--use-mcore-models" not in mindspeed_llm.STACKS[ML_RC1].scripts["qwen-7b"].switches
    plan, ws = plan_for(tmp_path / "ok", "qwen-7b", ML_RC1)  # the fixture's checkpoint holds no rank files yet
    converted = ws.checkpoint_dir("qwen-7b", "hf-tp8-pp1")
    for tp_rank in range(8):
        checkpoint.save_rank(converted, 1, tp_rank, 0, 1, {"model": {"decoder.final_layernorm.weight": torch.ones(2)}})
    assert getattr(checkpoint_layout(str(converted)), "name", None) == "mcore"
    with pytest.raises(NpuboxError) as e:
        make_plan(["--model", "qwen-7b", "--stack", ML_RC1], launch_ns(1, 0), devices=8, workspace=ws)
    assert "trains Megatron's legacy model, which cannot load it" in str(e.value)
