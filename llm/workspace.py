"""Where each phase reads and writes inside the workspace volume (the only writable mount).

    <root>/models/<model>/hf                       HF weights + tokenizer files (sample or user-provided)
    <root>/data/raw/                               raw corpora (jsonl, parquet, ...)
    <root>/data/<model>/sample_text_document       the pretraining dataset (.bin/.idx) preprocess writes
    <root>/checkpoints/<model>/hf-tp<T>-pp<P>      what convert writes from the HF weights, split T × P
    <root>/checkpoints/<model>/pretrain            pretrain's own saves
    <root>/eval/<model>/                           evaluation data and results
    <root>/logs/                                   metrics JSONL, phase logs

Every phase takes these paths from here, so a folder's name is spelled once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ROOT = "/workspace"
SUBDIRS = ("models", "data", "checkpoints", "eval", "logs")  # made when a workspace is created
DATASET = "sample"  # the prefix preprocess writes under data/<model>/ unless told otherwise


def host_default() -> Path:
    """The host folder `invoke run` mounts as the workspace unless told otherwise: $NPUBOX_HOST_WORKSPACE, else
    ./workspace (relative to the current directory)."""
    return Path(os.environ.get("NPUBOX_HOST_WORKSPACE", "workspace"))


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def from_env(cls) -> Workspace:
        return cls(Path(os.environ.get("NPUBOX_WORKSPACE", DEFAULT_ROOT)))

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def hf_dir(self, model: str) -> Path:
        return self.models / model / "hf"

    def raw_data(self) -> Path:
        return self.data / "raw"

    def dataset_prefix(self, model: str, name: str = DATASET) -> Path:
        """preprocess's --output-prefix: it writes ``<prefix>_<key>_document.bin/.idx`` for each JSON key."""
        return self.data / model / name

    def text_dataset(self, model: str) -> Path:
        """The pretraining dataset (without .bin/.idx): what preprocess writes from the "text" key, pretrain reads."""
        prefix = self.dataset_prefix(model)
        return prefix.with_name(f"{prefix.name}_text_document")

    def checkpoint_dir(self, model: str, tag: str) -> Path:
        return self.checkpoints / model / tag

    def converted_dir(self, model: str, tp: int, pp: int) -> Path:
        """Where convert writes the HF weights as a Megatron checkpoint split ``tp`` × ``pp``; pretrain starts there."""
        return self.checkpoint_dir(model, f"hf-tp{tp}-pp{pp}")

    def pretrain_dir(self, model: str) -> Path:
        """pretrain's own saves, which it resumes from."""
        return self.checkpoint_dir(model, "pretrain")
