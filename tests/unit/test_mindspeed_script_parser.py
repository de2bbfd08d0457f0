"""The example-script reader of the golden tests does what bash does with the scripts' constructs."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from _example_scripts import flag_differences, flag_map, parse_script, same_values

SCRIPT = r"""#!/bin/bash
# comment line
export CUDA_DEVICE_MAX_CONNECTIONS=1
NPUS_PER_NODE=8
NNODES=2
WORLD_SIZE=$(($NPUS_PER_NODE*$NNODES))
CKPT_LOAD_DIR="your model ckpt path"   # trailing comment
TP=4

DISTRIBUTED_ARGS="
    --nproc_per_node $NPUS_PER_NODE \
    --nnodes $NNODES
"

GPT_ARGS="
    --tensor-model-parallel-size ${TP} \
    --world $WORLD_SIZE \
    --norm-epsilon 1e-6 \
    --bf16
"

torchrun $DISTRIBUTED_ARGS pretrain_gpt.py \
    $GPT_ARGS \
    --load ${CKPT_LOAD_DIR} \
    --tokenizer-kwargs 'eos_token' '<|endoftext|>' \
    --distributed-backend nccl \
    | tee logs/x.log
"""


def test_variables_blocks_and_the_torchrun_line():
    s = parse_script(SCRIPT, {"CKPT_LOAD_DIR": "/ws/ckpt"})
    assert s.exports == {"CUDA_DEVICE_MAX_CONNECTIONS": "1"}
    assert s.variables["WORLD_SIZE"] == "16"
    assert s.torchrun_args == ["--nproc_per_node", "8", "--nnodes", "2"]
    assert s.program == "pretrain_gpt.py"
    assert s.flags == {
        "--tensor-model-parallel-size": ("4",),
        "--world": ("16",),
        "--norm-epsilon": ("1e-6",),
        "--bf16": (),
        "--load": ("/ws/ckpt",),
        "--tokenizer-kwargs": ("eos_token", "<|endoftext|>"),
        "--distributed-backend": ("nccl",),
    }


def test_an_unset_override_keeps_the_scripts_value_and_unquoted_paths_split_as_in_bash():
    s = parse_script(SCRIPT)
    assert s.flags["--load"] == ("your", "model", "ckpt", "path")


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_agrees(tmp_path):
    """Run the script with bash, torchrun replaced by a function printing its arguments one per line."""
    script = tmp_path / "s.sh"
    script.write_text(
        SCRIPT.replace("#!/bin/bash", "#!/bin/bash\ntorchrun() { printf '%s\\n' \"$@\"; }\ntee() { cat; }")
    )
    words = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=True).stdout.splitlines()
    s = parse_script(SCRIPT)
    program_at = words.index("pretrain_gpt.py")
    assert words[:program_at] == s.torchrun_args
    assert flag_map(words[program_at + 1 :]) == s.flags


def test_flag_map_and_comparison():
    with pytest.raises(ValueError, match="--a given twice"):
        flag_map(["--a", "1", "--a", "2"])
    with pytest.raises(ValueError, match="before any flag"):
        flag_map(["x"])
    assert same_values(("1e-1",), ("0.1",)) and same_values(("1000000",), ("1000000.0",))
    assert not same_values(("1e-5",), ("1e-6",)) and not same_values(("a",), ("b",)) and not same_values(("1",), ())
    assert flag_differences({"--a": ("1",), "--b": ()}, {"--a": ("2",), "--c": ()}) == [
        "only ours: --b ",
        "only the script: --c ",
        "--a: ours '1', script '2'",
    ]


def test_unterminated_quote_is_an_error():
    with pytest.raises(ValueError, match="unterminated"):
        parse_script('A="open\n')
