"""`python -m llm launch`: the torchrun command it builds, two "nodes" on 127.0.0.1 training
together like one node of the same world size, and a lost node making the other exit naming it."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from _pretrain_fixtures import finish, free_port, launch_argv, losses, start, write_dataset
from llm.errors import NpuboxError
from llm.torchrun import build_parser, plan


def planned(*argv: str, devices: int = 0):
    return plan(build_parser().parse_args(list(argv)), devices)


def test_static_launch_runs_the_phase_module_on_each_device(monkeypatch):
    monkeypatch.delenv("CUDA_DEVICE_MAX_CONNECTIONS", raising=False)
    p = planned(
        "--nnodes", "2", "--node-rank", "1", "--master-addr", "10.0.0.1", "pretrain", "--model", "tiny", devices=8
    )
    assert p.torchrun_args[:3] == ["--nproc-per-node=8", "--nnodes=2", "--max-restarts=0"]
    assert {"--node-rank=1", "--master-addr=10.0.0.1", "--master-port=6000"} <= set(p.torchrun_args)
    assert p.torchrun_args[-5:] == ["-m", "llm", "pretrain", "--model", "tiny"]
    assert p.env["CUDA_DEVICE_MAX_CONNECTIONS"] == "1"
    assert {"HCCL_CONNECT_TIMEOUT", "PYTORCH_NPU_ALLOC_CONF"} <= set(p.env)


def test_cpu_defaults_to_one_process_and_nproc_overrides():
    assert planned("pretrain").torchrun_args[0] == "--nproc-per-node=1"
    assert planned("--nproc", "3", "pretrain", devices=8).torchrun_args[0] == "--nproc-per-node=3"


def test_c10d_rendezvous(monkeypatch):
    p = planned("--nnodes", "1:4", "--rdzv-endpoint", "head:29400", "--rdzv-id", "job7", "pretrain")
    assert {"--rdzv-backend=c10d", "--rdzv-endpoint=head:29400", "--rdzv-id=job7", "--nnodes=1:4"} <= set(
        p.torchrun_args
    )
    assert not any(a.startswith(("--node-rank", "--master-addr")) for a in p.torchrun_args)


def test_environment_overrides(monkeypatch):
    monkeypatch.setenv("HCCL_CONNECT_TIMEOUT", "600")  # the user's environment wins over our default
    p = planned("--socket-ifname", "eth1", "--env", "PYTORCH_NPU_ALLOC_CONF=x", "--env", "A=b=c", "pretrain")
    assert "HCCL_CONNECT_TIMEOUT" not in p.env
    assert p.env["HCCL_SOCKET_IFNAME"] == p.env["GLOO_SOCKET_IFNAME"] == "eth1"
    assert p.env["PYTORCH_NPU_ALLOC_CONF"] == "x" and p.env["A"] == "b=c"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--nnodes", "2", "--node-rank", "2", "pretrain"], "--node-rank 2: expected 0..1"),
        (["--env", "NOVALUE", "pretrain"], "--env 'NOVALUE': expected KEY=VALUE"),
        (["bogus"], "unknown phase 'bogus'"),
        (["--nnodes", "1:2", "pretrain"], "needs --rdzv-endpoint"),
        (["--rdzv-endpoint", "nohostport", "pretrain"], "expected HOST:PORT"),
    ],
)
def test_bad_launch_options(argv, message):
    with pytest.raises(NpuboxError, match=message.replace("(", r"\(")):
        planned(*argv)


def node_argv(node: int, port: int, metrics: Path, iters: int, heartbeat: str = "30") -> list[str]:
    launch = ("--nnodes", "2", "--node-rank", str(node), "--master-addr", "127.0.0.1", "--heartbeat-timeout", heartbeat)
    save = metrics.with_suffix(".ckpt")  # both nodes share it, as nodes share storage
    return launch_argv(
        2, ["--tp", "2", "--train-iters", str(iters), "--save", str(save), "--metrics", str(metrics)], port, launch
    )


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("launch-ws")
    write_dataset(root / "data" / "tiny" / "sample_text_document", count=60)
    return root


def test_two_nodes_train_like_one_node_of_the_same_world_size(ws):
    port = free_port()
    one = start(
        launch_argv(
            4, ["--tp", "2", "--train-iters", "6", "--save", str(ws / "one.ckpt"), "--metrics", str(ws / "one.jsonl")]
        ),
        ws,
    )
    node0 = start(node_argv(0, port, ws / "two.jsonl", 6), ws)
    node1 = start(node_argv(1, port, ws / "two.jsonl", 6), ws)
    out = finish(node0)
    finish(node1)
    finish(one)
    assert "world 4 = tp 2 × pp 1 × dp 2" in out
    single, multi = losses(ws / "one.jsonl"), losses(ws / "two.jsonl")
    assert sorted(multi) == list(range(1, 7))
    assert max(abs(single[i] - multi[i]) for i in multi) < 1e-6


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def test_losing_a_node_makes_the_other_exit_naming_the_lost_ranks(ws):
    port = free_port()
    metrics = ws / "kill.jsonl"
    node0 = start(node_argv(0, port, metrics, 100000, heartbeat="6"), ws)
    node1 = start(node_argv(1, port, metrics, 100000, heartbeat="6"), ws)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(node0.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 180
        while not (metrics.exists() and metrics.read_text().count("\n") >= 2):
            assert time.monotonic() < deadline and node0.poll() is None, "".join(output)[-3000:]
            time.sleep(0.5)
        for pid in descendants(node1.pid):  # the whole node: launcher, torchrun agent, workers
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        killed = time.monotonic()
        code = node0.wait(timeout=120)
        took = time.monotonic() - killed
        reader.join(timeout=5)
    finally:
        for proc in (node0, node1):
            for pid in descendants(proc.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    text = "".join(output)
    assert code != 0
    assert took < 120
    assert "lost ranks 2, 3 on node 1" in text, text[-3000:]


class RecordingHeartbeat:
    """llm.heartbeat.Heartbeat whose verdict is recorded instead of ending the process."""

    def __new__(cls, rank: int, world: int):
        from llm.heartbeat import Heartbeat

        class Recording(Heartbeat):
            def _lost(self, message):
                if not self._stop.is_set():
                    self.verdict = message
                    self._stop.set()

        return Recording(rank, world, interval=0.2, timeout=1.5)


def test_heartbeat_names_a_silent_rank_but_not_one_that_finished(monkeypatch):
    import torch.distributed as torch_dist

    port = free_port()
    server = torch_dist.TCPStore("127.0.0.1", port, is_master=True, wait_for_workers=False)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    monkeypatch.setenv("GROUP_RANK", "0")
    for run, finishes_cleanly in (("clean", True), ("lost", False)):
        monkeypatch.setenv("TORCHELASTIC_RUN_ID", run)
        beats = [RecordingHeartbeat(r, 3) for r in range(3)]
        for hb in beats:
            hb.start()
        time.sleep(0.6)
        if finishes_cleanly:
            beats[2].stop()  # done: marks itself in the store
        else:
            beats[2]._stop.set()  # silent, as if its node vanished
        time.sleep(2.5)
        for hb in beats[:2]:
            hb.stop()
        if finishes_cleanly:
            assert [hb.verdict for hb in beats[:2]] == [None, None]
        else:
            for hb in beats[:2]:
                assert hb.verdict.startswith("lost rank 2 on node 0 (") and hb.verdict.endswith(
                    "): no heartbeat for 1.5 s"
                )
    del server
