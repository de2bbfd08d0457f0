"""The mindspeed-llm engine's flags pass the pinned Megatron-LM's own parse_args + validate_args (with the stack's
MindSpeed-LLM / ModelLink argument decorators), for 8 devices per node; a flag the stack does not know is refused.

Each case builds the stack's source tree from ../shared/sources as the images do (Megatron-LM's megatron/ copied into
MindSpeed-LLM / ModelLink, MindSpeed or AscendSpeed beside it on the path) and runs
``python -m llm.pretrain.mindspeed_llm.megatron_validate`` on it. Where this environment lacks a package that the
stack's Megatron needs (the host venv has no pkg_resources, six, scipy: the CPU twins have them), the case is skipped
naming it; in a twin it runs."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from _example_scripts import extract_archive, source_archive
from _mindspeed_fixtures import ML_MASTER, ML_RC1, V200, V230, V2600
from _pretrain_fixtures import REPO, env_for
from llm.pretrain.mindspeed_llm.scripts import STACKS

CASES = {  # stack, model, nodes of 8 devices
    "2.0.0 qwen25-7b": (V200, "qwen25-7b", 1),
    "2.3.0 qwen25-7b": (V230, "qwen25-7b", 2),
    "2.3.0 qwen25-72b": (V230, "qwen25-72b", 16),
    "26.0.0 qwen25-72b": (V2600, "qwen25-72b", 16),
    "ModelLink 1.0 qwen-7b": (ML_RC1, "qwen-7b", 1),
    "ModelLink 17b97452 aquila2-7b": (ML_MASTER, "aquila2-7b", 1),
}


def stack_tree(root, commit: str) -> str:
    """PYTHONPATH for the stack: its MindSpeed-LLM / ModelLink tree with megatron/ copied in, and MindSpeed."""
    stack = STACKS[commit]
    archives = {"MindSpeed-LLM": commit, "Megatron-LM": stack.megatron, "MindSpeed": stack.mindspeed}
    for name, sha in archives.items():
        if not source_archive(name, sha).is_file():
            pytest.skip(f"{source_archive(name, sha).name} is not in {source_archive(name, sha).parent}")
        if not (root / f"{name}-{sha}").is_dir():
            extract_archive(source_archive(name, sha), root)
    llm_tree = root / f"MindSpeed-LLM-{commit}"
    if not (llm_tree / "megatron").is_dir():
        shutil.copytree(root / f"Megatron-LM-{stack.megatron}" / "megatron", llm_tree / "megatron")
    return f"{llm_tree}:{root / f'MindSpeed-{stack.mindspeed}'}:{REPO}"


def validate(root, commit: str, model: str, nnodes: int, *extra: str) -> subprocess.CompletedProcess:
    argv = [
        sys.executable,
        "-m",
        "llm.pretrain.mindspeed_llm.megatron_validate",
        "--stack",
        commit,
        "--model",
        model,
        "--nnodes",
        str(nnodes),
        *extra,
    ]
    return subprocess.run(
        argv,
        cwd=root,
        env=env_for(root, PYTHONPATH=stack_tree(root, commit)),
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    return tmp_path_factory.mktemp("stacks")


@pytest.mark.parametrize("case", list(CASES))
def test_flags_parse_and_validate_with_the_pinned_megatron(case, trees):
    commit, model, nnodes = CASES[case]
    out = validate(trees, commit, model, nnodes)
    if out.returncode == 2:
        pytest.skip(f"{case}: the check cannot run here: {(out.stderr or out.stdout).strip().splitlines()[-1]}")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ok: parsed with parse_args(ignore_unknown_args=False) and validated by" in out.stdout
    assert f"world size {8 * nnodes}" in out.stdout

    refused = validate(trees, commit, model, nnodes, "--", "--not-a-megatron-flag", "1")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "unrecognized arguments: --not-a-megatron-flag 1" in refused.stdout
