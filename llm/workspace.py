"""Where each phase reads and writes inside the workspace volume (the only writable mount).

    <root>/models/<model>/hf          HF weights + tokenizer files (sample or user-provided)
    <root>/data/raw/                  raw corpora (jsonl, parquet, ...)
    <root>/data/<model>/<name>        indexed dataset prefix (<name>_text_document.bin/.idx)
    <root>/checkpoints/<model>/<tag>  Megatron-core checkpoints
    <root>/eval/<model>/              evaluation data and results
    <root>/logs/                      metrics JSONL, phase logs
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ROOT = "/workspace"


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def from_env(cls) -> "Workspace":
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

    def dataset_prefix(self, model: str, name: str = "sample") -> Path:
        return self.data / model / name

    def checkpoint_dir(self, model: str, tag: str) -> Path:
        return self.checkpoints / model / tag
