"""The mindspeed-llm engine against the stack's own Megatron, in its CPU twin (no NPU):

- the flags the engine composes for each of the stack's example scripts parse and validate with the pinned
  Megatron-LM's own parse_args + validate_args (and MindSpeed-LLM's argument decorators), 8 devices a node, and
  a flag the stack does not know is refused;
- Megatron-LM's own pretrain_gpt.py (the stack's pinned checkout: the closest a CPU gets to the NPU engine)
  starts from a TP2 × PP2 checkpoint that `llm convert` wrote, through Megatron's own load_checkpoint, trains,
  and saves with its own save_checkpoint, which `llm convert` turns back into HF bit for bit
  (tests/unit/test_mindspeed_megatron_cpu.py, run inside the twin on its own Megatron tree).
"""

import subprocess

import pytest

from llm.env import commands, container
from llm.env.twin import make_twin
from llm.pretrain.mindspeed_llm.scripts import stack_from_spec

from .conftest import REPO, SOURCES, TWIN_ENV

pytestmark = pytest.mark.twin
REPO_MOUNT = "/opt/npubox/repo"  # ../shared/sources beside it, as on the host
MEGATRON = "/opt/npubox/sources/Megatron-LM"  # the stack's pinned Megatron-LM checkout, helpers compiled


def _run_in_twin(workspace, command: list[str], env: dict | None = None, timeout: int = 900):
    """``command`` in a sealed container of the twin, with the repository and the pinned sources read-only."""
    loaded = make_twin(commands.load_spec(TWIN_ENV))
    opts = commands.run_options(loaded, workspace)
    extra = [
        "--mount",
        f"type=bind,source={REPO},target={REPO_MOUNT},readonly",
        "--mount",
        f"type=bind,source={SOURCES},target=/opt/npubox/shared/sources,readonly",
    ]
    for key, value in (env or {}).items():
        extra += ["--env", f"{key}={value}"]
    out = subprocess.run(
        ["docker", "run", "--rm", *container.sealed_flags(opts), *extra, opts.image, *command],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if command[:3] == ["python", "-m", "pytest"] and "No module named pytest" in out.stderr:
        pytest.skip("this stack's lock has no pytest (none of its sources' requirements names it)")
    return out


def _cases():
    spec = commands.load_spec(TWIN_ENV).spec.model_dump(mode="json")
    stack, _ = stack_from_spec(spec)
    for model in sorted(stack.scripts):
        nodes = 16 if model == "qwen25-72b" else 1  # TP8 × PP4 × CP4 needs 128 devices
        for nnodes in (nodes, 2 * nodes):
            yield pytest.param(stack.commit, model, nnodes, id=f"{model}-{nnodes}-nodes")


@pytest.mark.parametrize(("commit", "model", "nnodes"), list(_cases()))
def test_engine_flags_validate_with_the_stacks_own_megatron(twin_image, workspace, commit, model, nnodes):
    check = [
        "python",
        "-m",
        "llm.pretrain.mindspeed_llm.megatron_validate",
        "--stack",
        commit,
        "--model",
        model,
        "--nnodes",
        str(nnodes),
    ]
    out = _run_in_twin(workspace, check)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "megatron: /opt/npubox/sources/MindSpeed-LLM/megatron" in out.stdout  # the stack's copy
    assert "ok: parsed with parse_args(ignore_unknown_args=False) and validated by" in out.stdout
    assert f"world size {8 * nnodes}" in out.stdout

    refused = _run_in_twin(workspace, [*check, "--", "--not-a-megatron-flag", "1"])
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "unrecognized arguments: --not-a-megatron-flag 1" in refused.stdout


def _stack():
    return stack_from_spec(commands.load_spec(TWIN_ENV).spec.model_dump(mode="json"))[0]


def _pytest_in_twin(workspace, test_file: str, select: str, env: dict | None = None, timeout: int = 900):
    """One selection of a unit test file, run by the twin's own Python on its own libraries."""
    command = [
        "python",
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-q",
        "-rs",
        f"{REPO_MOUNT}/tests/unit/{test_file}",
        "-k",
        select,
    ]
    return _run_in_twin(workspace, command, env=env, timeout=timeout)


def test_log_lines_come_from_the_stacks_own_training_log(twin_image, workspace):
    """The engine's log parser reads the line that the stack's Megatron's own training_log prints."""
    out = _pytest_in_twin(workspace, "test_mindspeed_log.py", f"pinned_megatron and {_stack().megatron[:7]}")
    if "no tests ran" in out.stdout or " deselected" in out.stdout and " passed" not in out.stdout:
        pytest.skip(f"no line of Megatron {_stack().megatron[:7]} is made by a test (its format is copied from source)")
    assert out.returncode == 0 and "1 passed" in out.stdout, out.stdout[-3000:] + out.stderr[-2000:]


def test_megatrons_own_pretrain_gpt_loads_trains_and_saves_llm_checkpoints(twin_image, workspace):
    out = _pytest_in_twin(
        workspace, "test_mindspeed_megatron_cpu.py", "trains_from", env={"NPUBOX_MEGATRON_TREE": MEGATRON}, timeout=1500
    )
    if "SKIPPED" in out.stdout and "1 skipped" in out.stdout:
        pytest.skip("in this twin: " + out.stdout.split("SKIPPED", 1)[1].strip().splitlines()[0])
    assert out.returncode == 0 and "1 passed" in out.stdout, out.stdout[-4000:] + out.stderr[-2000:]
