"""The process groups a phase runs in: torch.distributed, megatron-core's TP/PP/DP groups, and the heartbeat
that names a lost peer (:mod:`llm.heartbeat`).

    dist = init_distributed(tp=2, pp=1, accel=accel)  # after llm.accel.detect(), which may patch megatron (NPU)
    ...
    destroy_distributed()

Heavy imports (torch, megatron) happen inside the functions.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from llm.errors import NpuboxError

if TYPE_CHECKING:
    from llm.accel import Accelerator


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits. ``dp = world_size // (tp * pp)``."""

    rank: int
    world_size: int
    local_rank: int
    tp: int
    pp: int
    dp: int
    tp_rank: int
    pp_rank: int
    dp_rank: int


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(tp: int = 1, pp: int = 1, accel: Accelerator | None = None, timeout_s: int = 600) -> DistInfo:
    """Start torch.distributed (from torchrun's RANK/WORLD_SIZE/LOCAL_RANK/MASTER_* variables, or
    a single local process when they are absent) and megatron's TP/PP/DP groups.

    ``timeout_s`` bounds every collective; a lost peer is noticed sooner by :mod:`llm.heartbeat`,
    which makes this process exit naming the lost ranks."""
    import torch.distributed as torch_dist
    from megatron.core import parallel_state

    from llm import accel as accel_mod
    from llm import heartbeat

    accel = accel or accel_mod.detect()
    if "RANK" not in os.environ:  # a plain `python -m llm pretrain`: world of one
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world % (tp * pp):
        raise NpuboxError(
            f"world size {world} is not a multiple of tp × pp = {tp} × {pp}; "
            f"launch a multiple of {tp * pp} processes or change --tp/--pp"
        )
    accel.set_device(local_rank)
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(
            backend=accel.backend, rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s)
        )
    heartbeat.start_heartbeat(rank, world)  # names a lost node's ranks within a minute
    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(
            tensor_model_parallel_size=tp,
            pipeline_model_parallel_size=pp,
            distributed_timeout_minutes=max(1, timeout_s // 60),
        )
    return DistInfo(
        rank=rank,
        world_size=world,
        local_rank=local_rank,
        tp=tp,
        pp=pp,
        dp=world // (tp * pp),
        tp_rank=parallel_state.get_tensor_model_parallel_rank(),
        pp_rank=parallel_state.get_pipeline_model_parallel_rank(),
        dp_rank=parallel_state.get_data_parallel_rank(),
    )


def destroy_distributed() -> None:
    import torch.distributed as torch_dist
    from megatron.core import parallel_state

    from llm import heartbeat

    heartbeat.stop_heartbeat()
    parallel_state.destroy_model_parallel()
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()
