"""Multi-node launch options: what `invoke run --nnodes ...` passes to `python -m llm launch` in the container, and
what the manifests pass on each node (the Slurm script through `invoke run` itself, the Kubernetes pods directly).

The options split in two: those of the job, the same on every node (node count, processes per node, socket
interface, the workers' environment such as HCCL's timeouts), and those of one node (its rank, node 0's address and
port), which a manifest can only name by the scheduler's variables.
"""

from __future__ import annotations

from dataclasses import dataclass

from llm.torchrun import DEFAULT_MASTER_PORT


@dataclass(frozen=True)
class Launch:
    """Multi-process / multi-node options: the phase runs under `python -m llm launch` (torchrun)."""

    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = DEFAULT_MASTER_PORT
    nproc: int | None = None
    socket_ifname: str | None = None  # HCCL_SOCKET_IFNAME / GLOO_SOCKET_IFNAME, which multi-node NPU jobs need
    worker_env: tuple[str, ...] = ()  # KEY=VALUE for the workers, e.g. HCCL_CONNECT_TIMEOUT=1800

    def job_argv(self, env_option: str = "--env") -> list[str]:
        """The options every node gets alike. ``env_option``: how the command at hand names the workers'
        environment (`llm launch --env`, `invoke run --launch-env`)."""
        out = ["--nnodes", str(self.nnodes)]
        out += ["--nproc", str(self.nproc)] if self.nproc else []
        out += ["--socket-ifname", self.socket_ifname] if self.socket_ifname else []
        for item in self.worker_env:
            out += [env_option, item]
        return out

    def node_argv(self) -> list[str]:
        return [
            "--node-rank",
            str(self.node_rank),
            "--master-addr",
            self.master_addr,
            "--master-port",
            str(self.master_port),
        ]

    def argv(self) -> list[str]:
        return self.job_argv() + self.node_argv()


def phase_argv(model: str, phase: str, extra: list[str]) -> list[str]:
    """`<phase> --model M <extra>`: what `python -m llm` (or `llm launch`) is given."""
    return [phase, *(["--model", model] if model and phase != "env" else []), *extra]


def phase_command(model: str, phase: str, extra: list[str], launch: Launch | None = None) -> list[str]:
    """`python -m llm [launch ...] <phase> --model M <extra>`, as the container runs it."""
    launch_part = ["launch", *launch.argv()] if launch is not None else []
    return ["python", "-m", "llm", *launch_part, *phase_argv(model, phase, extra)]
