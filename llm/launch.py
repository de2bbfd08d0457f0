"""`python -m llm launch [options] <phase> [phase args]`: run a phase on every device through torchrun.

    python -m llm launch pretrain --model qwen25-7b                       # one node, all its devices
    python -m llm launch --nnodes 2 --node-rank 1 --master-addr 10.0.0.1 pretrain --model qwen25-7b
    python -m llm launch --nnodes 2 --rdzv-endpoint 10.0.0.1:29400 --rdzv-id job7 pretrain --model M

Processes per node: one per NPU / GPU found (:func:`llm.accel.detect`), or ``--nproc`` (CPU: 1
unless given). Static multi-node (``--nnodes --node-rank --master-addr --master-port``, as the
MindSpeed-LLM scripts do) or c10d rendezvous (``--rdzv-endpoint``; any node may start first).
Exports what MindSpeed-LLM's example scripts and guides export, unless already set:
``CUDA_DEVICE_MAX_CONNECTIONS=1``, ``HCCL_CONNECT_TIMEOUT``, ``PYTORCH_NPU_ALLOC_CONF``, and with
``--socket-ifname`` ``HCCL_SOCKET_IFNAME`` / ``GLOO_SOCKET_IFNAME``; ``--env K=V`` overrides any.

A lost node: the workers' heartbeat watchdog (:mod:`llm.heartbeat`) makes the survivors exit
non-zero naming the lost ranks; torchrun then stops the node's other workers and this command
exits non-zero with a summary of which ranks failed.
"""

from __future__ import annotations

import os
import sys

from llm.torchrun import build_parser, failure_summary, phase_args, plan


def main(argv: list[str]) -> int:
    ns = build_parser().parse_args(argv)
    from llm.accel import detect

    if ns.phase == "pretrain":
        from llm.pretrain import engine_module, split_engine

        engine, rest = split_engine(phase_args(ns))
        module = engine_module(engine)
        if module.STARTS_ITS_OWN_WORKERS:  # e.g. torchrun around the stack's own pretrain_gpt.py
            return module.main(rest, launch_ns=ns)
        # mcore: each worker runs `llm pretrain` with the same arguments (an --engine mcore included)
    accel = detect()
    launch = plan(ns, accel.device_count)
    print(
        " ".join(f"{k}={v}" for k, v in sorted(launch.env.items())),
        "torchrun",
        " ".join(launch.torchrun_args),
        file=sys.stderr,
        flush=True,
    )
    if ns.dry_run:
        return 0
    os.environ.update(launch.env)
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    try:
        run(get_args_parser().parse_args(launch.torchrun_args))
    except ChildFailedError as e:
        print(
            f"error: launch of `{ns.phase}` failed on node {ns.node_rank}: {failure_summary(e)}",
            file=sys.stderr,
            flush=True,
        )
        return 1
    return 0
