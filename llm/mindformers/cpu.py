"""What a MindFormers stack's CPU twin changes, each change named: the yaml values MindSpore's CPU backend needs
(printed by ``--dry-run`` like every other change) and the shims for the Ascend kernels it lacks
(``cpu_shims/sitecustomize.py``, put first on PYTHONPATH only when the device target is CPU).

Found by running the guides' training on MindSpore 2.7.2's CPU backend (MindFormers v1.3.2 and r1.8.0); each
value says what fails without it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SHIMS_DIR = Path(__file__).parent / "cpu_shims"
SHIMS = (
    "loss-scale overflow check through MindSpore's IsFinite path (NPUGetFloatStatusV2 and AllFinite have no CPU "
    "kernel)",
    "mindspore.communication barrier() as a graph-mode AllReduce (Barrier has no CPU kernel)",
)


def cpu_overrides(workers: int) -> dict[str, Any]:
    """Yaml values (keys every guide's yaml has) for ``workers`` data-parallel CPU processes."""
    return {
        "context.device_target": "CPU",
        # Data sink needs a device queue: on CPU each sink "epoch" ran the whole dataset instead of sink_size steps.
        "runner_config.sink_mode": False,
        # The CPU backend runs data parallel only: semi-auto parallel fails with "Invalid backend: CPU", and the
        # parallel optimizer, sequence parallel, micro-batch interleaving and pipeline recompute lists need it.
        "use_parallel": workers > 1,
        "parallel.parallel_mode": 0,
        "parallel.full_batch": False,
        "parallel.enable_parallel_optimizer": False,
        "parallel_config.data_parallel": workers,
        "parallel_config.model_parallel": 1,
        "parallel_config.pipeline_stage": 1,
        "parallel_config.use_seq_parallel": False,
        "parallel_config.micro_batch_num": 1,
        "micro_batch_interleave_num": 1,
        "recompute_config.recompute": False,
        "recompute_config.select_recompute": False,
        "model.model_config.use_flash_attention": False,  # FlashAttentionScore is an Ascend kernel
    }


def cpu_additions() -> dict[str, Any]:
    """LlamaConfig options the guides' yamls leave at their defaults, which have no CPU kernel."""
    return {
        "model.model_config.fused_rms_norm": False,  # the fused RmsNorm kernel is Ascend's
        "model.model_config.use_rope_slice": True,  # the default rotary path broadcasts a BatchMatMul CPU lacks
    }
