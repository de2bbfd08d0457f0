"""The CPU twin of an Ascend stack (MindSpeed-LLM 2.0.0 by default): its own Megatron, transformers,
tokenizers and numpy, built from the pinned sources in ../shared/sources, sealed. Our phases run in
it and give what the CPU stack gives.

    NPUBOX_TWIN_ENV=ascend-mindspeed-llm-2.3.0 pytest tests/integration/test_twin.py   # another stack
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llm.env import commands, container
from llm.env.engine import inspect_image
from llm.env.twin import make_twin

from .conftest import REPO, TWIN_ENV, invoke

ENV = TWIN_ENV
# ModelLink 1.0's transformers (4.36) predates Qwen2: its twin runs the Llama-shaped tiny model.
MODEL = "tiny-llama" if ENV == "ascend-modellink-1.0" else "tiny"

pytestmark = pytest.mark.twin


def _host_llm(ws: Path, *args: str) -> subprocess.CompletedProcess:
    """A phase on the CPU stack: the host's .venv holds exactly envs/cpu.lock."""
    proc = subprocess.run(
        [sys.executable, "-m", "llm", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "NPUBOX_WORKSPACE": str(ws)},
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _own(ws: Path) -> Path:
    if os.geteuid() == 0:
        for root, dirs, files in os.walk(ws):
            for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.chown(name, 1234, 1234, follow_symlinks=False)
    return ws


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The CPU stack's sample, preprocess and MMLU eval of the tiny model."""
    ws = tmp_path_factory.mktemp("cpu-stack") / "workspace"
    _host_llm(ws, "sample", "--model", MODEL)
    _host_llm(ws, "preprocess", "--model", MODEL)
    from llm.eval.sample_sets import write_sample_sets

    write_sample_sets(ws / "eval")
    _host_llm(ws, "eval", "--task", "mmlu", "--model", MODEL, "--output", str(ws / "eval/cpu-mmlu.json"))
    return ws


def _copy(reference: Path, tmp_path: Path, *parts: str) -> Path:
    ws = tmp_path / "workspace"
    for part in parts:
        shutil.copytree(reference / part, ws / part)
    return _own(ws)


def _twin(ws: Path, phase: str, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = invoke(
        "run", "--env", ENV, "--twin", "cpu", "--model", MODEL, "--phase", phase, "--workspace", str(ws), "--", *extra
    )
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_twin_verifies_itself_sealed(twin_image, workspace):
    proc = invoke(
        "run", "--env", ENV, "--twin", "cpu", "--phase", "env", "--workspace", str(workspace), "--", "--verify"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"ok: matches {twin_image}" in proc.stdout
    assert "--network none --read-only" in proc.stderr


def test_twin_labels_say_what_differs(twin_image):
    labels = inspect_image(twin_image)["Config"]["Labels"]
    twin = make_twin(commands.load_spec(ENV))
    assert labels["npubox.twin-of"] == ENV
    assert "torch-npu" in labels["npubox.twin.differences"] and "no CANN" in labels["npubox.twin.differences"]
    for src in twin.spec.sources:
        assert labels[f"npubox.source.{src.name}"] == src.commit


def test_twin_passes_testinfra(twin_image):
    proc = invoke("check", "--env", ENV, "--twin", "cpu")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " failed" not in proc.stdout


def test_sample_runs_in_the_twin(twin_image, tmp_path):
    ws = _own(tmp_path / "workspace")
    _twin(ws, "sample")
    hf = ws / "models" / MODEL / "hf"
    from tokenizers import Tokenizer

    from llm.recipes import load_recipe

    vocab = load_recipe(MODEL).tokenizer.vocab_size
    assert Tokenizer.from_file(str(hf / "tokenizer.json")).get_vocab_size() == vocab
    assert (hf / "config.json").is_file() and list(hf.glob("*.safetensors"))
    assert (ws / "data/raw/sample.jsonl").stat().st_size > 100_000


def test_convert_tp2_pp2_and_back_is_bit_exact(twin_image, reference, tmp_path):
    import torch
    from safetensors.torch import load_file

    ws = _copy(reference, tmp_path, f"models/{MODEL}/hf")
    _twin(ws, "convert", "--tp", "2", "--pp", "2")
    _twin(
        ws,
        "convert",
        "--from",
        "mcore",
        "--to",
        "hf",
        "--load-dir",
        f"/workspace/checkpoints/{MODEL}/hf-tp2-pp2",
        "--save-dir",
        f"/workspace/models/{MODEL}/back",
    )
    ranks = sorted(p.name for p in (ws / f"checkpoints/{MODEL}/hf-tp2-pp2/iter_0000001").iterdir())
    assert ranks == ["mp_rank_00_000", "mp_rank_00_001", "mp_rank_01_000", "mp_rank_01_001"]

    def tensors(folder: Path) -> dict:
        out = {}
        for shard in sorted(folder.glob("*.safetensors")):
            out.update(load_file(shard))
        return out

    original, back = tensors(reference / f"models/{MODEL}/hf"), tensors(ws / f"models/{MODEL}/back")
    assert sorted(original) == sorted(back)
    assert all(torch.equal(original[k], back[k]) for k in original)


def test_preprocess_is_byte_identical_to_the_cpu_stack(twin_image, reference, tmp_path):
    ws = _copy(reference, tmp_path, f"models/{MODEL}/hf", "data/raw")
    _twin(ws, "preprocess")
    for suffix in (".bin", ".idx"):
        name = f"data/{MODEL}/sample_text_document{suffix}"
        assert (ws / name).read_bytes() == (reference / name).read_bytes(), name


def test_eval_gives_the_cpu_stacks_predictions(twin_image, reference, tmp_path):
    ws = _copy(reference, tmp_path, f"models/{MODEL}/hf", "eval/mmlu")
    _twin(ws, "eval", "--task", "mmlu", "--output", "/workspace/eval/twin-mmlu.json")
    ours = json.loads((ws / "eval/twin-mmlu.json").read_text())
    cpu = json.loads((reference / "eval/cpu-mmlu.json").read_text())
    assert [p["prediction"] for p in ours["predictions"]] == [p["prediction"] for p in cpu["predictions"]]
    worst = max(
        abs(a - b)
        for p, q in zip(ours["predictions"], cpu["predictions"])
        for a, b in zip(p["logprobs"], q["logprobs"])
    )
    assert worst < 1e-4, worst
    print(f"max |logprob difference| against the CPU stack: {worst:.2e}")
    assert ours["overall"]["total"] == cpu["overall"]["total"] > 0


GPT_DATASET = """
import struct, numpy, megatron.core
from llm.compat import build_gpt_dataset
prefix = "/workspace/data/{model}/sample_text_document"
ds = build_gpt_dataset(prefix, 128, 64, 1234, "/workspace/data/{model}/cache", {vocab})
# Our own reading of what we wrote (.idx: header, counts, int32 lengths, int64 byte offsets) ...
idx = open(prefix + ".idx", "rb").read()
n = struct.unpack("<Q", idx[18:26])[0]
lengths = numpy.frombuffer(idx, numpy.int32, n, 34)
offsets = numpy.frombuffer(idx, numpy.int64, n, 34 + 4 * n)
tokens = numpy.fromfile(prefix + ".bin", dtype=numpy.uint16)
doc = lambda d: tokens[offsets[d] // 2: offsets[d] // 2 + lengths[d]]
# ... and Megatron's sample 0 rebuilt from Megatron's own indices over it.
extra = getattr(ds.config, "add_extra_token_to_sequence", 1)
i = ds.shuffle_index[0]
(b, bo), (e, eo) = ds.sample_index[i], ds.sample_index[i + 1]
docs = ds.document_index[b:e + 1]
parts = [doc(d) for d in docs]
parts[-1] = parts[-1][:eo + extra]
parts[0] = parts[0][bo:]
expected = numpy.concatenate(parts)
item = ds[0]
got = numpy.asarray(item["tokens"] if "tokens" in item else item["text"])  # bcce6f: "text", seq + 1 tokens
print(megatron.core.__file__, len(ds), len(got), bool((got == expected[:len(got)]).all()))
"""


def test_the_stacks_own_megatron_builds_a_gpt_dataset_on_our_output(twin_image, reference, tmp_path):
    ws = _copy(reference, tmp_path, f"data/{MODEL}")
    opts = commands.run_options(make_twin(commands.load_spec(ENV)), ws)
    proc = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            *container.sealed_flags(opts),
            opts.image,
            "python",
            "-c",
            GPT_DATASET.format(model=MODEL, vocab=2048),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode and "No module named 'transformer_engine'" in proc.stderr:
        pytest.skip(
            "this stack's Megatron (bcce6f) imports Transformer Engine, which on the NPU AscendSpeed's adaptor "
            "stands in for once apex and torch_npu import; the twin has neither"
        )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    path, length, seq, found = proc.stdout.split()[-4:]
    assert path == "/opt/npubox/sources/MindSpeed-LLM/megatron/core/__init__.py"  # the stack's copy, not a wheel
    assert int(length) >= 64 and int(seq) in (128, 129) and found == "True"
