"""llm.fusions: the opt-in kernel fusions that need no Apex/Transformer Engine, on CPU.

20 fp32 steps of the tiny recipe with swiglu, bias-dropout-add, adam (fused AdamW) and compile
(torch.compile) give the losses of the run without them, and a checkpoint with the same keys.
"""

from __future__ import annotations

import pytest

from _pretrain_fixtures import finish, launch_argv, losses, make_workspace, start
from llm.errors import NpuboxError
from llm.fusions import config_overrides, parse_fusions

FUSED = "swiglu,bias-dropout-add,adam,compile"


def test_names_parse_and_map_to_megatron_config_fields():
    assert parse_fusions("none") == () and parse_fusions("") == ()
    assert parse_fusions(" swiglu, cross-entropy ") == ("swiglu", "cross-entropy")
    assert config_overrides(("swiglu", "compile", "cross-entropy"), bf16=True) == {
        "bias_activation_fusion": True,
        "cross_entropy_loss_fusion": True,
        "cross_entropy_fusion_impl": "native",
    }
    with pytest.raises(NpuboxError, match="--fusions swiglu,rope: unknown rope; expected a comma-separated list of"):
        parse_fusions("swiglu,rope")
    with pytest.raises(NpuboxError, match="cross-entropy rounds the logits' gradient to bf16: use it with --bf16 only"):
        config_overrides(("cross-entropy",), bf16=False)


@pytest.mark.slow
def test_fusions_train_like_the_plain_model(tmp_path):
    from llm import checkpoint

    ws = make_workspace(tmp_path / "ws")
    procs = {
        name: start(
            launch_argv(
                1,
                [
                    "--train-iters",
                    "20",
                    "--fusions",
                    fusions,
                    "--save",
                    str(ws / name),
                    "--metrics",
                    str(ws / f"{name}.jsonl"),
                ],
            ),
            ws,
        )
        for name, fusions in (("plain", "none"), ("fused", FUSED))
    }
    outs = {name: finish(p, timeout=600) for name, p in procs.items()}
    assert f"fusions {FUSED}" in outs["fused"]
    ref, fused = losses(ws / "plain.jsonl"), losses(ws / "fused.jsonl")
    assert sorted(ref) == sorted(fused) == list(range(1, 21))
    worst = max(abs(ref[i] - fused[i]) for i in ref)
    assert worst < 1e-5, f"fused run's losses differ by up to {worst:.2e}"
    keys = [sorted(checkpoint.load_rank(ws / name, 20, 0, 0, 1)["model"]) for name in ("plain", "fused")]
    assert keys[0] == keys[1]  # torch.compile in place: no "_orig_mod." prefix
