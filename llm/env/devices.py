"""Host accelerators → `docker run` flags. CPU: none. CUDA: --gpus. NPU: the davinci devices."""

from __future__ import annotations

import shutil

from llm.env.spec import LoadedSpec
from llm.errors import NpuboxError


def device_flags(loaded: LoadedSpec, devices: str | None = None) -> tuple[list[str], dict[str, str]]:
    """Flags and container environment for the spec's accelerator on this host."""
    acc = loaded.spec.accelerator
    if acc == "cpu":
        if devices:
            raise NpuboxError(f"--devices {devices!r} was given, but env {loaded.name!r} runs on the CPU and uses none")
        return [], {}
    if acc == "cuda":
        if shutil.which("nvidia-smi") is None:
            raise NpuboxError(f"env {loaded.name!r} needs NVIDIA GPUs, and this host has no nvidia-smi (no NVIDIA driver).")
        return ["--gpus", f'"device={devices}"' if devices else "all"], {}
    raise NpuboxError(f"env {loaded.name!r} needs Ascend NPUs, and this host has no /dev/davinci devices.")
