"""Issue 19's rough edge: in a CPU twin whose spec names the mindspeed-llm engine, `llm pretrain` started 8 workers
that each died importing torch_npu. It is refused before any worker starts, naming `--engine mcore`; a dry run still
prints the engine's command (what the twin is for: checking it against the stack's own Megatron)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from _mindspeed_fixtures import workspace_for
from _pretrain_fixtures import REPO, env_for
from llm.env.labels import baked_spec
from llm.env.spec import load_spec
from llm.env.twin import make_twin

ENV = "ascend-mindspeed-llm-2.0.0"
MODEL = "qwen25-7b"
# Stands in for pretrain_gpt.py: says that it was started (the real one imports torch_npu through MindSpeed).
STARTED = "import os, pathlib; pathlib.Path(os.environ['STARTED']).write_text('started')\n"


@pytest.fixture
def twin_image(tmp_path):
    """The twin's /etc/npubox/spec.json and a MindSpeed-LLM folder holding the stand-in program."""
    baked = tmp_path / "spec.json"
    baked.write_text(json.dumps(baked_spec(make_twin(load_spec(ENV, arch="aarch64")))))
    source = tmp_path / "MindSpeed-LLM"
    source.mkdir()
    (source / "pretrain_gpt.py").write_text(STARTED)
    workspace_for(tmp_path / "ws", MODEL, 1, 1)
    return tmp_path


def _pretrain(root, *launch: str, dry_run: bool = False) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "llm", *launch, *(["--dry-run"] if dry_run and launch else []), "pretrain"]
    argv += ["--model", MODEL, "--source-dir", str(root / "MindSpeed-LLM"), "--tp", "1", "--pp", "1"]
    argv += ["--global-batch-size", "8", "--no-progress", *(["--dry-run"] if dry_run and not launch else [])]
    env = env_for(root / "ws", NPUBOX_BAKED_SPEC=str(root / "spec.json"), STARTED=str(root / "started"))
    return subprocess.run(argv, cwd=REPO, env={**env, "NPUBOX_DEVICE": "cpu"}, capture_output=True, text=True)


@pytest.mark.parametrize("launch", [(), ("launch", "--nproc", "8")], ids=["pretrain", "launch --nproc 8"])
def test_a_twin_refuses_the_mindspeed_llm_engine_before_any_worker_starts(twin_image, launch):
    out = _pretrain(twin_image, *launch)
    assert not (twin_image / "started").exists(), "a worker was started"
    assert out.returncode == 1, out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1] == (
        f"error: this image is the CPU twin of {ENV}: its spec's engine, mindspeed-llm, trains with MindSpeed's NPU "
        "kernels (every worker imports torch_npu), which a twin does not have; train here with --engine mcore "
        "(npubox's loop on this stack's Megatron), or print the engine's command with --dry-run"
    )


def test_a_twin_still_prints_the_engines_command(twin_image):
    out = _pretrain(twin_image, "launch", "--nproc", "8", dry_run=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"  {twin_image / 'MindSpeed-LLM' / 'pretrain_gpt.py'} \\" in out.stderr.splitlines()
    assert not (twin_image / "started").exists()
