"""Acceptance 1, 2 and 4 of the pretrain issue, on CPU with gloo and the tiny recipe.

One converted checkpoint (HF → mcore with `llm convert`, split tp1pp1 / tp2pp1 / tp1pp2) and one
seeded indexed dataset; the runs start together (they are independent processes) and the tests
compare what they logged.
"""

from __future__ import annotations

import math

import pytest

from _pretrain_fixtures import MODEL, documents, finish, launch_argv, losses, make_workspace, start

ITERS = 20


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from llm.convert.cli import main as convert_main

    ws = make_workspace(tmp_path_factory.mktemp("pretrain-ws"))
    hf = ws / "models" / MODEL / "hf"
    for tp, pp in ((1, 1), (2, 1), (1, 2)):
        convert_main(
            [
                "--model",
                MODEL,
                "--load-dir",
                str(hf),
                "--save-dir",
                str(ws / f"conv-tp{tp}-pp{pp}"),
                "--tp",
                str(tp),
                "--pp",
                str(pp),
            ]
        )

    def argv(name: str, nproc: int, load: str, *extra: str) -> list[str]:
        return launch_argv(
            nproc,
            [
                "--train-iters",
                str(ITERS),
                "--load",
                str(ws / load),
                "--save",
                str(ws / name),
                "--metrics",
                str(ws / f"{name}.jsonl"),
                *extra,
            ],
        )

    procs = {
        "tp1": start(argv("tp1", 1, "conv-tp1-pp1"), ws),
        "tp2": start(argv("tp2", 2, "conv-tp2-pp1", "--tp", "2"), ws),
        "pp2": start(argv("pp2", 2, "conv-tp1-pp2", "--pp", "2"), ws),
        "dp2": start(argv("dp2", 2, "conv-tp1-pp1"), ws),
        "stop10": start(argv("resume", 1, "conv-tp1-pp1", "--exit-interval", "10"), ws),
    }
    out = {name: finish(p) for name, p in procs.items()}
    # The resumed half: --load the directory the first half saved into.
    out["resume"] = finish(start(argv("resume", 1, "resume"), ws))
    return ws, out


def test_layouts_give_the_same_loss_curve(runs):
    ws, _ = runs
    ref = losses(ws / "tp1.jsonl")
    assert sorted(ref) == list(range(1, ITERS + 1))
    assert ref[ITERS] < ref[1] - 0.05, "the loss should go down in 20 steps"
    for name in ("tp2", "pp2", "dp2"):
        curve = losses(ws / f"{name}.jsonl")
        assert sorted(curve) == sorted(ref), name
        worst = max(abs(curve[i] - ref[i]) for i in ref)
        assert worst < 1e-3, f"{name}: loss differs from tp1 by {worst:.2e}"


def test_stop_and_resume_is_bit_identical(runs):
    ws, out = runs
    assert "stopping at iteration 10" in out["stop10"]
    assert "resuming at step 10" in out["resume"]
    ref, resumed = losses(ws / "tp1.jsonl"), losses(ws / "resume.jsonl")
    assert [resumed[i] for i in range(1, ITERS + 1)] == [ref[i] for i in range(1, ITERS + 1)]
    assert (ws / "resume" / "latest_checkpointed_iteration.txt").read_text().strip() == str(ITERS)
    assert (ws / "resume" / "iter_0000010").is_dir() and (ws / "resume" / "iter_0000020").is_dir()


def held_out_loss(hf_dir) -> float:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    docs = [torch.from_numpy(d[:33]).long() for d in documents(seed=99, count=16) if len(d) >= 33]
    batch = torch.stack(docs)
    with torch.no_grad():
        return float(model(input_ids=batch, labels=batch).loss)


def test_pretrained_checkpoint_converts_back_to_hf_with_lower_loss(runs):
    from llm.convert.cli import main as convert_main

    ws, _ = runs
    back = ws / "tp1-hf"
    convert_main(
        ["--model", MODEL, "--from", "mcore", "--to", "hf", "--load-dir", str(ws / "tp1"), "--save-dir", str(back)]
    )
    before, after = held_out_loss(ws / "models" / MODEL / "hf"), held_out_loss(back)
    assert math.isfinite(after) and after < before - 0.05, f"held-out loss {before:.4f} -> {after:.4f}"
