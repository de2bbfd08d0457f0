"""The phases in the sealed CPU container: the whole pipeline, then single phases re-run on its
workspace, exactly as `invoke run` does them."""

import json

import pytest

from .conftest import invoke


@pytest.fixture(scope="module")
def pipeline_workspace(cpu_image, tmp_path_factory):
    ws = tmp_path_factory.mktemp("pipeline") / "workspace"  # npubox creates it (for uid 1000 when root runs)
    proc = invoke("run", "--model", "tiny", "--phase", "all", "--workspace", str(ws), "--", "--train-iters", "20")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return ws, proc


def test_whole_pipeline_runs_sealed_and_summarises(pipeline_workspace):
    ws, proc = pipeline_workspace
    assert "docker run --cidfile " in proc.stderr and " --rm --init --network none --read-only" in proc.stderr
    summary = proc.stdout[proc.stdout.index("npubox pipeline: tiny") :]
    for phase in (
        "sample",
        "convert",
        "preprocess",
        "pretrain",
        "convert back",
        "eval mmlu",
        "eval ceval",
        "eval boolq",
    ):
        assert phase in summary
    assert (ws / "checkpoints/tiny/pretrain/latest_checkpointed_iteration.txt").read_text().strip() == "20"
    assert (ws / "models/tiny/pretrained-hf/model.safetensors.index.json").is_file()
    for task in ("mmlu", "ceval", "boolq"):
        result = json.loads((ws / f"eval/tiny/{task}.json").read_text())
        assert 0.0 <= result["accuracy"] <= 1.0 and result["overall"]["total"] > 0
    metrics = [json.loads(line) for line in (ws / "logs/pretrain-tiny.jsonl").read_text().splitlines()]
    assert len([m for m in metrics if "loss" in m]) == 20


def test_preprocess_phase_alone(pipeline_workspace):
    ws, _ = pipeline_workspace
    out = ws / "data/tiny/sample_text_document"
    for suffix in (".bin", ".idx"):
        out.with_suffix(suffix).unlink()
    proc = invoke("run", "--model", "tiny", "--phase", "preprocess", "--workspace", str(ws))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.with_suffix(".idx").read_bytes()[:9] == b"MMIDIDX\x00\x00"
    assert out.with_suffix(".bin").stat().st_size > 0


def test_convert_phase_alone(pipeline_workspace):
    ws, _ = pipeline_workspace
    proc = invoke(
        "run", "--model", "tiny", "--phase", "convert", "--workspace", str(ws), "--", "--tp", "2", "--pp", "2"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = ws / "checkpoints/tiny/hf-tp2-pp2"
    assert (out / "latest_checkpointed_iteration.txt").read_text().strip() == "1"
    ranks = sorted(p.name for p in (out / "iter_0000001").iterdir())
    assert ranks == ["mp_rank_00_000", "mp_rank_00_001", "mp_rank_01_000", "mp_rank_01_001"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pretrain_args(tag: str, iters: int = 8) -> list[str]:
    return [
        "--",
        "--load",
        "/workspace/checkpoints/tiny/hf-tp1-pp1",
        "--save",
        f"/workspace/checkpoints/tiny/{tag}",
        "--train-iters",
        str(iters),
        "--save-interval",
        str(iters),
        "--micro-batch-size",
        "2",
        "--global-batch-size",
        "8",
        "--metrics",
        f"/workspace/logs/{tag}.jsonl",
        "--no-progress",
    ]


def _losses(ws, tag: str) -> list[float]:
    return [json.loads(line)["loss"] for line in (ws / f"logs/{tag}.jsonl").read_text().splitlines() if line.strip()]


def _node(ws, rank: int, port: int, tag: str, iters: int = 8):
    import subprocess

    from .conftest import INVOKE, REPO

    argv = [
        *INVOKE,
        "run",
        "--model",
        "tiny",
        "--phase",
        "pretrain",
        "--workspace",
        str(ws),
        "--nnodes",
        "2",
        "--node-rank",
        str(rank),
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(port),
        "--nproc",
        "2",
        "--name",
        f"npubox-{tag}-node{rank}",
        *_pretrain_args(tag, iters),
    ]
    return subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_container_nodes_match_one_node_of_four(pipeline_workspace):
    ws, _ = pipeline_workspace
    single = invoke(
        "run",
        "--model",
        "tiny",
        "--phase",
        "pretrain",
        "--workspace",
        str(ws),
        "--nproc",
        "4",
        *_pretrain_args("mn-single"),
    )
    assert single.returncode == 0, single.stdout[-3000:] + single.stderr[-3000:]
    port = _free_port()
    nodes = [_node(ws, rank, port, "mn-multi") for rank in (0, 1)]
    outputs = [n.communicate(timeout=900)[0] for n in nodes]
    for node, out in zip(nodes, outputs):
        assert node.returncode == 0, out[-3000:]
    assert "--network host" in outputs[0]
    a, b = _losses(ws, "mn-single"), _losses(ws, "mn-multi")
    assert len(a) == len(b) == 8
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-3, (a, b)


def test_killing_one_node_stops_the_other_naming_the_lost_rank(pipeline_workspace):
    import subprocess
    import time

    ws, _ = pipeline_workspace
    port = _free_port()
    nodes = [_node(ws, rank, port, "mn-kill", iters=100000) for rank in (0, 1)]
    metrics = ws / "logs/mn-kill.jsonl"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not (metrics.is_file() and metrics.read_text().count("\n") >= 2):
        assert all(n.poll() is None for n in nodes), "a node exited before training started"
        time.sleep(2)
    assert metrics.is_file(), "training did not start within 10 minutes"
    subprocess.run(["docker", "kill", "npubox-mn-kill-node1"], check=True, capture_output=True)
    killed_at = time.monotonic()
    try:
        out = nodes[0].communicate(timeout=150)[0]
    finally:
        for n in nodes:
            if n.poll() is None:
                n.kill()
        subprocess.run(["docker", "rm", "-f", "npubox-mn-kill-node0", "npubox-mn-kill-node1"], capture_output=True)
    assert nodes[0].returncode != 0
    assert time.monotonic() - killed_at < 120
    assert "lost rank" in out and ("2" in out.split("lost rank", 1)[1][:20] or "3" in out.split("lost rank", 1)[1][:20])


@pytest.mark.security
def test_sigterm_to_invoke_run_stops_its_container_after_pretrain_saves(pipeline_workspace):
    """Issue 19, case 6: a stopped `invoke run` leaves no container writing into the workspace."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from .conftest import REPO

    ws, _ = pipeline_workspace
    name = f"npubox-test-sigterm-{os.getpid()}"
    metrics = ws / "logs/sigterm.jsonl"
    argv = [sys.executable, "-m", "invoke", "run", "--model", "tiny", "--phase", "pretrain", "--workspace", str(ws)]
    argv += ["--name", name, "--", "--train-iters", "100000", "--save", "/workspace/checkpoints/tiny/sigterm"]
    argv += ["--metrics", "/workspace/logs/sigterm.jsonl", "--no-progress"]
    run = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not (metrics.is_file() and '"loss"' in metrics.read_text()):
            assert run.poll() is None, run.communicate()[1][-3000:]
            time.sleep(0.5)
        run.send_signal(signal.SIGTERM)
        out, err = run.communicate(timeout=200)
        left = subprocess.run(
            ["docker", "ps", "--all", "--quiet", "--filter", f"name=^{name}$"], capture_output=True, text=True
        )
    finally:
        if run.poll() is None:
            run.kill()  # the invoke this test started
        subprocess.run(["docker", "rm", "--force", name], capture_output=True)  # its container, if it regressed
    assert run.returncode == 143, err[-3000:]
    assert left.stdout.strip() == ""  # the container is gone
    assert "SIGTERM: stopping the container" in err
    saved = int((ws / "checkpoints/tiny/sigterm/latest_checkpointed_iteration.txt").read_text())
    assert f"SIGTERM received; iteration {saved} is saved in /workspace/checkpoints/tiny/sigterm" in out + err
