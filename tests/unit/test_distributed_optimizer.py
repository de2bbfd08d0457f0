"""megatron-core's distributed optimizer in `llm pretrain`: save, load and an exact resume, on CPU.

The CUDA crash this guards against (qwen25-0.5b, first save): ``get_parameter_state_dp_zero`` →
``RuntimeError: The size of tensor a (1152) must match the size of tensor b (896)``. A bf16 model
whose RMSNorm weights stayed fp32 gave megatron-core two gradient buffers (bf16, fp32) whose
parameters share a param group, and its group-index map then pointed the qkv bias at a norm
weight. The tiny recipe has the same parts (qkv bias 128, hidden 64): bf16 with data-parallel
size 2 is the CUDA configuration, run on CPU with gloo through llm.accel's shims.

Runs: 6 steps straight; 3 steps, stop, resume to 6; the plain optimizer for 6 steps.
"""

from __future__ import annotations

import pytest

from _pretrain_fixtures import MODEL, finish, launch_argv, losses, make_workspace, start

torch = pytest.importorskip("torch")
pytest.importorskip("megatron.core")

ITERS = 6
BF16_DP2 = ["--bf16", "--train-iters", str(ITERS)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    ws = make_workspace(tmp_path_factory.mktemp("distopt-ws"))

    def argv(name: str, *extra: str) -> list[str]:
        return launch_argv(2, [*BF16_DP2, "--save", str(ws / name), "--metrics", str(ws / f"{name}.jsonl"), *extra])

    procs = {
        "full": start(argv("full"), ws),
        "stop3": start(argv("resume", "--exit-interval", "3"), ws),
        "plain": start(argv("plain", "--no-distributed-optimizer"), ws),
    }
    out = {name: finish(p) for name, p in procs.items()}
    out["resume"] = finish(start(argv("resume", "--load", str(ws / "resume")), ws))
    return ws, out


def test_bf16_dp2_saves_and_resumes_bit_identically(runs):
    ws, out = runs
    assert "saved iteration 3" in out["stop3"] and "resuming at step 3" in out["resume"]
    ref, resumed = losses(ws / "full.jsonl"), losses(ws / "resume.jsonl")
    assert sorted(ref) == list(range(1, ITERS + 1))
    assert [resumed[i] for i in range(1, ITERS + 1)] == [ref[i] for i in range(1, ITERS + 1)]


def test_the_parameter_state_file_holds_every_parameter_once(runs):
    """distrib_optim.pt (Megatron's layout): fp32 main weights and Adam moments of all shards."""
    from llm import checkpoint

    ws, _ = runs
    rank_dir = checkpoint.rank_file(ws / "full", ITERS, 0, 0, 1).parent
    model = checkpoint.load_rank(ws / "full", ITERS, 0, 0, 1)["model"]
    weights = [v for k, v in model.items() if not k.endswith("_extra_state")]
    assert {w.dtype for w in weights} == {torch.bfloat16}, "every parameter of a bf16 model is bf16"
    state = torch.load(rank_dir / "distrib_optim.pt", weights_only=True)
    assert state["buckets_coalesced"]
    (per_dtype,) = state[0].values()  # one gradient buffer: one dtype
    numel = sum(w.numel() for w in weights)
    assert per_dtype["numel_unpadded"] == numel
    assert {k: per_dtype[k].numel() for k in ("param", "exp_avg", "exp_avg_sq")} == dict.fromkeys(
        ("param", "exp_avg", "exp_avg_sq"), numel
    )
    # The bf16 weights are the rounded fp32 main weights, whichever shard held them.
    main = per_dtype["param"].bfloat16().float().sort().values
    assert torch.equal(main, torch.cat([w.float().flatten() for w in weights]).sort().values)
    assert (per_dtype["exp_avg_sq"] >= 0).all() and per_dtype["exp_avg_sq"].count_nonzero() > numel // 2


def test_the_plain_optimizer_trains_alike(runs):
    ws, _ = runs
    ref, plain = losses(ws / "full.jsonl"), losses(ws / "plain.jsonl")
    assert sorted(plain) == sorted(ref)
    worst = max(abs(ref[i] - plain[i]) for i in ref)
    assert worst < 2e-3, f"plain vs distributed optimizer: losses differ by up to {worst:.2e}"
    assert not list((ws / "plain").rglob("distrib_optim.pt"))


def test_resuming_with_the_other_optimizer_names_the_flag(runs):
    ws, _ = runs
    proc = start(
        launch_argv(
            2,
            [
                "--bf16",
                "--train-iters",
                str(ITERS + 2),
                "--load",
                str(ws / "full"),
                "--save",
                str(ws / "other"),
                "--no-distributed-optimizer",
            ],
        ),
        ws,
    )
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode != 0
    assert "saved with the distributed optimizer" in out and "resume with --distributed-optimizer" in out


def test_flags_default_to_the_distributed_optimizer(ws):
    from llm.pretrain.config import parse_config

    assert parse_config(["--model", MODEL], ws).distributed_optimizer is True
    assert parse_config(["--model", MODEL, "--no-distributed-optimizer"], ws).distributed_optimizer is False
    assert parse_config(["--model", MODEL, "--attention", "unfused"], ws).attention == "unfused"
    assert parse_config(["--model", MODEL], ws).attention is None
