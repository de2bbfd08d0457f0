"""Golden: the mindformers engine composes what the seed-002 guide runs (issue 20, acceptance 1).

From the pinned mindformers v1.3.2 archive (`024279c2`): the guide's own finetune command for qwen2-7b, taken from
research/qwen2/qwen2.md (which is ../shared/seeds/002), is run through the pinned scripts/msrun_launcher.sh with
a stand-in `msrun` on PATH that records its argv, folder and PYTHONPATH (there is no MindSpore here: the stand-in is
only for msrun itself). The engine's plan for the guide's inputs must be that argv, in that folder; it must parse
with run_qwen2.py's own argparse options (read from the file) to the guide's values; and its yaml must be the pinned
finetune_qwen2_7b.yaml with the guide's "basic configuration" block (also read from the guide) merged in."""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import subprocess
import tarfile
import textwrap
from pathlib import Path

import pytest
import yaml

from llm.mindformers.guides import GUIDES, guide_for_commit
from llm.pretrain.mindformers.msrun import launcher_defaults
from llm.pretrain.mindformers.run import make_plan
from tests.conftest import SOURCES

COMMIT = "024279c21923e555f7366940aed9017d13256052"
pytestmark = pytest.mark.sources

STANDIN_MSRUN = """#!/bin/bash
python3 -c 'import json, os, sys; print(json.dumps({"argv": ["msrun", *sys.argv[1:]], "cwd": os.getcwd(),
"pythonpath": os.environ.get("PYTHONPATH", "")}))' "$@" > "$RECORD"
"""


def unpack(commit: str, root: Path) -> Path:
    """The pinned mindformers archive of ``commit``, unpacked under ``root``: its source tree."""
    with tarfile.open(SOURCES / f"mindformers-{commit}.tar.gz") as tar:
        tar.extractall(root, filter="data")
    (tree,) = root.iterdir()
    return tree


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return unpack(COMMIT, tmp_path_factory.mktemp("mindformers"))


def shell_block(text: str, after: str) -> list[str]:
    """The lines of the first ```shell block after ``after`` in a guide."""
    block = text.split(after, 1)[1].split("```shell", 1)[1].split("```", 1)[0]
    return textwrap.dedent(block).strip().splitlines()


def joined(lines: list[str]) -> str:
    return " ".join(line.rstrip("\\").strip() for line in lines)


def run_through_launcher(line: str, cwd: Path, tmp_path: Path) -> dict:
    """Run a guide's `bash .../msrun_launcher.sh "..."` line with a stand-in msrun on PATH; what msrun was given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "msrun").write_text(STANDIN_MSRUN)
    (bin_dir / "msrun").chmod(0o755)
    record = tmp_path / "record.json"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "RECORD": str(record), "HOME": str(tmp_path)}
    proc = subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(record.read_text())


def guide_text(source: Path) -> str:
    return (source / "research" / "qwen2" / "qwen2.md").read_text(encoding="utf-8")


def guide_finetune_command(text: str) -> tuple[str, str]:
    """(the `cd` folder, the launcher line) of the guide's 启动微调 (start finetuning) shell block."""
    lines = shell_block(text, "启动微调")
    assert lines[0].startswith("cd ")
    return lines[0].removeprefix("cd ").strip(), joined(lines[1:])


def guide_basic_config(text: str) -> dict:
    """The yaml block under the guide's 基本配置 (basic configuration)."""
    block = text.split("基本配置", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    return yaml.safe_load(textwrap.dedent(block))


def recorded_guide_run(source: Path, tmp_path: Path) -> dict:
    workdir, line = guide_finetune_command(guide_text(source))
    return run_through_launcher(line, source / workdir, tmp_path)


def deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


STR2BOOL = {
    "str2bool": lambda v: v.lower() in ("true", "1"),
    "str2bool_or_str": lambda v: {"true": True, "false": False}.get(v.lower(), v),
}


def script_parser(script: Path) -> argparse.ArgumentParser:
    """A trainer script's own `parser.add_argument(...)` calls (run_qwen2.py, run_mindformer.py), read from the file
    (importing it needs MindSpore)."""
    types = {"str": str, "int": int, "float": float, **STR2BOOL}
    parser = argparse.ArgumentParser()
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            kwargs = {k.arg: k.value for k in node.keywords}
            extra = {"nargs": ast.literal_eval(kwargs["nargs"])} if "nargs" in kwargs else {}
            parser.add_argument(
                *[ast.literal_eval(a) for a in node.args],
                default=ast.literal_eval(kwargs["default"]) if "default" in kwargs else None,
                type=types[kwargs["type"].id] if "type" in kwargs else None,
                **extra,
            )
    return parser


def guide_plan(source: Path):
    guide = guide_for_commit(COMMIT)
    basic = guide_basic_config(guide_text(source))
    return make_plan(
        guide,
        source,
        "qwen2-7b",
        train_data="./path/alpaca-data.mindrecord",
        config_path="finetune_qwen2_7b.yaml",
        msrun=launcher_defaults(source),
        overrides={
            "load_checkpoint": basic["load_checkpoint"],
            "train_dataset.data_loader.dataset_dir": basic["train_dataset"]["data_loader"]["dataset_dir"],
            "processor.tokenizer.vocab_file": basic["processor"]["tokenizer"]["vocab_file"],
            "processor.tokenizer.merges_file": basic["processor"]["tokenizer"]["merges_file"],
        },
    )


def test_the_pinned_guide_is_seed_002(source):
    seed = next((SOURCES.parent / "seeds").glob("002_*.txt"), None) if (SOURCES.parent / "seeds").is_dir() else None
    if seed is None:
        pytest.skip("no ../shared/seeds/002_* beside the sources")
    assert guide_text(source) == seed.read_text(encoding="utf-8")


def test_the_msrun_command_is_the_guides(source, tmp_path):
    recorded = recorded_guide_run(source, tmp_path)
    plan = guide_plan(source)
    assert plan.argv == recorded["argv"]
    assert plan.cwd == Path(recorded["cwd"])
    # msrun_launcher.sh exports $MF_SCRIPTS_ROOT/../ (the source root); the plan sets the same folder
    assert os.path.realpath(recorded["pythonpath"].split(":")[0]) == os.path.realpath(
        plan.env["PYTHONPATH"].split(":")[0]
    )


def test_the_command_means_what_the_guide_means_to_run_qwen2(source, tmp_path):
    parser = script_parser(source / "research" / "qwen2" / "run_qwen2.py")
    program = guide_plan(source).argv.index("run_qwen2.py")
    ours = parser.parse_args(guide_plan(source).argv[program + 1 :])
    theirs = parser.parse_args(recorded_guide_run(source, tmp_path)["argv"][program + 1 :])
    assert ours == theirs
    assert (ours.config, ours.run_mode, ours.train_dataset) == (
        "finetune_qwen2_7b.yaml",
        "finetune",
        "./path/alpaca-data.mindrecord",
    )  # `--train_data` is argparse's prefix of run_qwen2.py's --train_dataset


def test_the_checkpoint_goes_on_run_qwen2s_command_line(source):
    """run_qwen2.py @ v1.3.2 drops the yaml's load_checkpoint unless --load_checkpoint is given (its finetune call
    passes finetune_checkpoint=None, and Trainer.finetune then sets config.load_checkpoint = None): the plan passes
    it."""
    trainer = (source / "mindformers" / "trainer" / "trainer.py").read_text()
    assert "            else:\n                self.config.load_checkpoint = None" in trainer
    guide = guide_for_commit(COMMIT)
    plan = make_plan(
        guide,
        source,
        "qwen2-7b",
        train_data="d",
        config_path="c.yaml",
        msrun=launcher_defaults(source),
        overrides={"load_checkpoint": "/ws/q.ckpt"},
        load="/ws/q.ckpt",
    )
    parser = script_parser(source / "research" / "qwen2" / "run_qwen2.py")
    ours = parser.parse_args(plan.argv[plan.argv.index("run_qwen2.py") + 1 :])
    assert ours.load_checkpoint == "/ws/q.ckpt" == plan.composed["load_checkpoint"]


def test_the_yaml_is_the_guides(source):
    text = guide_text(source)
    pinned = yaml.safe_load((source / "research" / "qwen2" / "finetune_qwen2_7b.yaml").read_text())
    expected = deep_merge(pinned, guide_basic_config(text))
    expected["train_dataset_task"]["dataset_config"] = expected["train_dataset"]  # the file's anchor
    plan = guide_plan(source)
    assert plan.composed == expected
    assert plan.changes == [
        "load_checkpoint: '' -> './path/qwen2_7b.ckpt'",
        "train_dataset.data_loader.dataset_dir: '' -> './path/alpaca-data.mindrecord'",
        "processor.tokenizer.vocab_file: '' -> './path/vocab.json'",
        "processor.tokenizer.merges_file: '' -> './path/merges.txt'",
    ]
    # the alias still shares the value, as MindFormers' own yaml loader reads it
    assert plan.composed["train_dataset_task"]["dataset_config"]["data_loader"]["dataset_dir"] == (
        "./path/alpaca-data.mindrecord"
    )


def test_a_worker_count_that_does_not_fit_the_yaml_is_refused(source):
    from dataclasses import replace

    from llm.errors import NpuboxError

    guide = GUIDES[COMMIT]
    with pytest.raises(NpuboxError, match=r"is 8 devices, and msrun starts 2 workers: pass --set parallel_config"):
        make_plan(
            guide,
            source,
            "qwen2-7b",
            train_data="d",
            config_path="c.yaml",
            msrun=replace(launcher_defaults(source), worker_num=2, local_worker_num=2),
            overrides={},
        )


def test_two_nodes_use_the_launchers_multi_node_form(source):
    from dataclasses import replace

    from llm.pretrain.mindformers.msrun import msrun_argv

    opts = replace(launcher_defaults(source), worker_num=16, master_addr="node0", node_rank=1)
    assert msrun_argv(opts) == [
        "msrun",
        "--worker_num=16",
        "--local_worker_num=8",
        "--master_addr=node0",
        "--master_port=8118",
        "--node_rank=1",
        "--log_dir=output/msrun_log",
        "--join=False",
        "--cluster_time_out=7200",
    ]
    text = (source / "scripts" / "msrun_launcher.sh").read_text()
    assert re.search(r"--master_addr=\$MASTER_ADDR \\\s+--master_port=\$MASTER_PORT \\\s+--node_rank=\$NODE_RANK", text)


def test_dry_run_prints_the_command_the_yaml_changes_and_what_is_missing(source, tmp_path):
    import sys

    env = {**os.environ, "NPUBOX_WORKSPACE": str(tmp_path / "ws"), "PYTHONPATH": str(Path(__file__).parents[2])}
    argv = [sys.executable, "-m", "llm", "pretrain", "--engine", "mindformers", "--model", "qwen2-7b"]
    argv += ["--stack", COMMIT[:8], "--source-dir", str(source), "--set", "runner_config.epochs=1", "--dry-run"]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    ws = tmp_path / "ws"
    assert f"  cd {source}/research/qwen2\n" in proc.stderr
    assert (
        "msrun --worker_num=8 --local_worker_num=8 --master_port=8118 "
        f"--log_dir={ws}/logs/msrun-qwen2-7b --join=True --cluster_time_out=7200 run_qwen2.py "
        f"--config {ws}/checkpoints/qwen2-7b/mindformers/npubox-qwen2-7b.yaml --run_mode finetune "
        f"--train_data {ws}/data/qwen2-7b/alpaca-mindrecord "
        f"--load_checkpoint {ws}/checkpoints/qwen2-7b/mindspore/qwen2-7b.ckpt\n"
    ) in proc.stderr
    # npubox waits for the workers (the launcher's --join=False would return at once and leave them running)
    assert "    runner_config.epochs: 5 -> 1\n" in proc.stderr
    assert f"  missing: --load {ws}/checkpoints/qwen2-7b/mindspore/qwen2-7b.ckpt\n" in proc.stderr
    assert not (ws / "checkpoints").exists()  # a dry run writes nothing

    bad = subprocess.run([*argv, "--workers", "2"], env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1
    assert "error: the yaml's data_parallel 2 x model_parallel 4 x pipeline_stage 1 is 8 devices" in bad.stderr
    none = subprocess.run([*argv, "--workers", "0"], env=env, capture_output=True, text=True, timeout=120)
    assert none.returncode == 1 and "error: --workers 0: expected 1 to 1024" in none.stderr


COMMIT_1_8 = "1a72d5583747857f6908c8bcfb3f2502f9f2e541"


def test_the_1_8_guides_command_is_run_mindformer_with_its_register_path(tmp_path):
    """research/qwen2_5/README.md @ r1.8.0: its single-node finetune line, run through that release's launcher (which
    adds --bind_core=True), is the plan's argv; the yaml it names by its short name is the folder's 7B yaml."""
    source = unpack(COMMIT_1_8, tmp_path / "src")
    text = (source / "research" / "qwen2_5" / "README.md").read_text(encoding="utf-8")
    recorded = run_through_launcher(joined(shell_block(text, "启动单机微调")), source, tmp_path)

    guide = guide_for_commit(COMMIT_1_8)
    config = recorded["argv"][recorded["argv"].index("--config") + 1]
    plan = make_plan(
        guide,
        source,
        "qwen25-7b",
        train_data="./path/alpaca-data.mindrecord",
        config_path=config,
        msrun=launcher_defaults(source),
        overrides={},
    )
    assert plan.argv == recorded["argv"]
    assert plan.argv[:2] == ["msrun", "--bind_core=True"]
    assert plan.cwd == source
    assert not (source / config).exists() and (source / guide.configs["qwen25-7b"]).is_file()
    one = make_plan(
        guide,
        source,
        "qwen25-7b",
        train_data="d",
        config_path="c.yaml",
        msrun=replace_workers(launcher_defaults(source), 1),
        overrides={"use_parallel": False},
    )
    assert one.argv[:2] == ["python", "run_mindformer.py"]  # the launcher: "use python instead of using msrun"


def replace_workers(opts, n):
    from dataclasses import replace

    return replace(opts, worker_num=n, local_worker_num=n)


def test_launch_across_two_nodes_gives_msrun_its_multi_node_form(tmp_path):
    """`llm launch --nnodes 2 --node-rank 1 --master-addr node0 pretrain` on the 1.8.0 stack: 16 workers, 8 here,
    the master and this node's rank, as the guide's multi-node example passes them to msrun_launcher.sh."""
    import sys

    source = unpack(COMMIT_1_8, tmp_path / "src")
    env = {**os.environ, "NPUBOX_WORKSPACE": str(tmp_path / "ws"), "PYTHONPATH": str(Path(__file__).parents[2])}
    argv = [sys.executable, "-m", "llm", "launch", "--nnodes", "2", "--node-rank", "1", "--master-addr", "node0"]
    argv += ["pretrain", "--engine", "mindformers", "--model", "qwen25-7b", "--stack", COMMIT_1_8[:8]]
    argv += ["--source-dir", str(source), "--dry-run"]
    refused = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1
    assert "is 8 devices, and msrun starts 16 workers: pass --set parallel_config.data_parallel=N" in refused.stderr
    proc = subprocess.run(
        [*argv, "--set", "parallel_config.data_parallel=8"], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert (
        "msrun --bind_core=True --worker_num=16 --local_worker_num=8 --master_addr=node0 --master_port=8118 "
        "--node_rank=1 "
    ) in proc.stderr
    assert "    parallel_config.data_parallel: 4 -> 8\n" in proc.stderr


COMMIT_1_5 = "9fa6e2fb228d8d2dcff48e011ceb6ce685af255d"


def effective(args: argparse.Namespace, yaml_doc: dict) -> dict:
    """What run_mindformer.py @ r1.5.0 trains with: an option given on its command line wins over the yaml's value
    (its `if args_.load_checkpoint is not None: config_.load_checkpoint = ...` block)."""
    return {
        "config": args.config,
        "register_path": args.register_path,
        "run_mode": args.run_mode,
        "load_checkpoint": args.load_checkpoint if args.load_checkpoint is not None else yaml_doc["load_checkpoint"],
        "auto_trans_ckpt": args.auto_trans_ckpt if args.auto_trans_ckpt is not None else yaml_doc["auto_trans_ckpt"],
        "dataset_dir": args.train_dataset_dir or yaml_doc["train_dataset"]["data_loader"]["dataset_dir"],
    }


def test_the_seed_001_finetune_means_what_the_guide_means(tmp_path):
    """research/qwen1_5/README.md @ r1.5.0 (../shared/seeds/001, whose copy there is mis-encoded): its 7B finetune
    line through the pinned launcher (8 workers, msrun's argv recorded) trains, as run_mindformer.py reads its options
    over the yaml, with the same config, checkpoint, auto_trans_ckpt, dataset and run mode as the plan npubox composes
    for the guide's inputs."""
    source = unpack(COMMIT_1_5, tmp_path / "src")
    text = (source / "research" / "qwen1_5" / "README.md").read_text(encoding="utf-8")
    theirs_argv = run_through_launcher(joined(shell_block(text, "单机8卡微调为例")), source, tmp_path)["argv"]

    guide = guide_for_commit(COMMIT_1_5)
    parser = script_parser(source / "run_mindformer.py")
    theirs = parser.parse_args(theirs_argv[theirs_argv.index("run_mindformer.py") + 1 :])
    config = theirs.config
    assert config == guide.configs["qwen15-7b"]
    plan = make_plan(
        guide,
        source,
        "qwen15-7b",
        train_data=theirs.train_dataset_dir,
        config_path=config,
        msrun=launcher_defaults(source),
        overrides={"load_checkpoint": theirs.load_checkpoint, **guide.command_values},
    )
    assert plan.argv[: plan.argv.index("run_mindformer.py")] == theirs_argv[: theirs_argv.index("run_mindformer.py")]
    ours = parser.parse_args(plan.argv[plan.argv.index("run_mindformer.py") + 1 :])
    pinned = yaml.safe_load((source / config).read_text())
    assert effective(ours, plan.composed) == effective(theirs, pinned)
    assert effective(ours, plan.composed)["auto_trans_ckpt"] is True  # the guide's --auto_trans_ckpt True
