"""Shared by the pretrain and launch tests: a workspace with tiny HF weights, a seeded indexed
dataset written with megatron-core's own IndexedDatasetBuilder, and helpers to run
`python -m llm launch` and read the loss curve it logged."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
MODEL = "tiny"
# Small enough for a shared 2-core machine: seq 32, 8 samples per step in micro-batches of 2.
TRAIN_FLAGS = [
    "--seq-length",
    "32",
    "--micro-batch-size",
    "2",
    "--global-batch-size",
    "8",
    "--lr",
    "3e-3",
    "--min-lr",
    "3e-4",
    "--warmup",
    "2",
    "--no-progress",
]


def documents(seed: int, count: int, vocab: int = 2048) -> list[np.ndarray]:
    """Learnable token streams: arithmetic progressions mod the vocabulary, random start and stride."""
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(count):
        n = int(rng.integers(24, 200))
        start, stride = int(rng.integers(0, vocab)), int(rng.integers(1, 4))
        docs.append(((start + stride * np.arange(n)) % vocab).astype(np.int32))
    return docs


def write_dataset(prefix: Path, seed: int = 0, count: int = 120) -> Path:
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    prefix.parent.mkdir(parents=True, exist_ok=True)
    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=np.int32)
    for doc in documents(seed, count):
        builder.add_document(torch.from_numpy(doc), [len(doc)])
    builder.finalize(f"{prefix}.idx")
    return prefix


def make_workspace(root: Path) -> Path:
    """models/tiny/hf (random HF weights) and data/tiny/sample_text_document."""
    from llm.recipes import load_recipe
    from llm.sample.weights import write_sample_weights

    write_sample_weights(load_recipe(MODEL), root / "models" / MODEL / "hf", seed=0)
    write_dataset(root / "data" / MODEL / "sample_text_document")
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_for(workspace: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(NPUBOX_WORKSPACE=str(workspace), PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.update(extra)
    return env


def llm_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "llm", *args]


def launch_argv(
    nproc: int, phase_args: list[str], port: int | None = None, launch_args: tuple[str, ...] = ()
) -> list[str]:
    return llm_argv(
        "launch",
        "--nproc",
        str(nproc),
        "--master-port",
        str(port or free_port()),
        *launch_args,
        "pretrain",
        "--model",
        MODEL,
        *TRAIN_FLAGS,
        *phase_args,
    )


def start(argv: list[str], workspace: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        argv,
        cwd=REPO,
        env=env_for(workspace, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{out[-4000:]}"
    return out


def run(argv: list[str], workspace: Path, timeout: float = 240, **env: str) -> str:
    return finish(start(argv, workspace, **env), timeout)


def losses(metrics: Path) -> dict[int, float]:
    """iteration -> loss from a metrics JSONL (a later line for the same iteration wins)."""
    out = {}
    for line in metrics.read_text().splitlines():
        record = json.loads(line)
        out[record["iteration"]] = record["loss"]
    return out
