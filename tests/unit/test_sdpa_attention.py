"""SDPA core attention (llm.sdpa_attention) against megatron-core's unfused DotProductAttention, on CPU.

- Module level: the same query/key/value through both, MHA and GQA, causal (no mask: the mask type)
  and with an explicit boolean mask (causal + padded keys), forward output and input gradients.
- Model level: the recipe's GPTModel built with each, the SDPA one loaded strictly from the unfused
  one's state dict (so the keys are the same), logits and every parameter's gradient; tiny-qwen
  (MHA) and tiny (GQA), TP1 in one process and TP2 in two (gloo, torch.multiprocessing spawn).
- Training: 20 steps of `llm pretrain` with each attention give the same loss curve.

fp32 throughout; tolerance 1e-5 (measured: ~1e-7 on the losses).
"""

from __future__ import annotations

import json
import os

import pytest

from _pretrain_fixtures import finish, free_port, launch_argv, losses, make_workspace, start

torch = pytest.importorskip("torch")
pytest.importorskip("megatron.core")

TOLERANCE = 1e-5
MODELS = {"tiny-qwen": "MHA", "tiny": "GQA"}


def _max_diff(a, b) -> float:
    return (a.float() - b.float()).abs().max().item()


def _core_attention_diffs(config_kwargs: dict, tp: int) -> dict[str, float]:
    """Both core attentions on the same inputs: causal from the mask type, and with an explicit mask."""
    import torch.nn.functional as F
    from megatron.core.transformer import TransformerConfig
    from megatron.core.transformer.enums import AttnMaskType

    from llm.sdpa_attention import core_attention

    config = TransformerConfig(
        num_layers=1,
        activation_func=F.silu,
        attention_dropout=0.0,
        tensor_model_parallel_size=tp,
        masked_softmax_fusion=False,
        **config_kwargs,
    )
    heads = config.num_attention_heads // tp
    groups = config.num_query_groups // tp
    s, b, d = 12, 3, config.kv_channels
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(s, b, n, d, generator=g) for n in (heads, groups, groups))
    causal = torch.ones(s, s, dtype=torch.bool).triu(1)
    padded = torch.zeros(b, 1, 1, s, dtype=torch.bool)
    padded[1, ..., 9:] = True  # the second sample's last 3 keys are padding
    explicit = causal.view(1, 1, s, s) | padded
    out = {}
    for case, mask in (("causal", None), ("mask", explicit)):
        results = {}
        for name in ("unfused", "sdpa"):
            module = core_attention(name)(
                config=config, layer_number=1, attn_mask_type=AttnMaskType.causal, attention_type="self"
            )
            qq, kk, vv = (t.clone().requires_grad_() for t in (q, k, v))
            o = module(qq, kk, vv, mask, attn_mask_type=AttnMaskType.causal)
            assert o.shape == (s, b, heads * d)
            (o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum().backward()
            results[name] = (o.detach(), qq.grad, kk.grad, vv.grad)
        out[case] = max(_max_diff(x, y) for x, y in zip(results["unfused"], results["sdpa"]))
    return out


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    from llm import accel as accel_mod

    accel = accel_mod.detect("cpu")
    from llm.distributed import destroy_distributed, init_distributed
    from llm.model import build_gpt_model
    from llm.recipes import load_recipe

    init_distributed(tp=world, pp=1, accel=accel)
    accel.model_parallel_seed(0)  # the unfused attention forks megatron's model-parallel RNG stream
    report = {}
    try:
        for name in MODELS:
            recipe = load_recipe(name)
            a = recipe.architecture
            report[f"{name} core"] = _core_attention_diffs(
                dict(
                    hidden_size=a.hidden_size,
                    num_attention_heads=a.num_attention_heads,
                    num_query_groups=a.num_query_groups,
                    kv_channels=a.head_dim,
                ),
                world,
            )
            models = {}
            for attention in ("unfused", "sdpa"):
                accel.model_parallel_seed(0)
                models[attention] = build_gpt_model(recipe, tp=world, pp=1, accel=accel, attention=attention)
            unfused, sdpa = models["unfused"], models["sdpa"]
            keys = (sorted(unfused.state_dict()), sorted(sdpa.state_dict()))
            sdpa.load_state_dict(unfused.state_dict(), strict=True)
            tokens = torch.randint(0, a.vocab_size, (2, 24), generator=torch.Generator().manual_seed(1))
            positions = torch.arange(24).expand(2, 24)
            logits = {}
            for attention, model in models.items():
                out = model(tokens, positions, attention_mask=None)
                out.float().logsumexp(-1).mean().backward()
                logits[attention] = out.detach()
            grads = max(_max_diff(p.grad, q.grad) for p, q in zip(unfused.parameters(), sdpa.parameters()))
            report[name] = {
                "core attention": type(sdpa.decoder.layers[0].self_attention.core_attention).__name__,
                "same keys": keys[0] == keys[1],
                "logits": _max_diff(logits["unfused"], logits["sdpa"]),
                "grads": grads,
            }
    finally:
        destroy_distributed()
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(report, f)


@pytest.mark.slow
@pytest.mark.parametrize("tp", [1, 2])
def test_sdpa_equals_unfused_for_mha_and_gqa(tp, tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(tp, free_port(), str(tmp_path)), nprocs=tp, join=True)
    for rank in range(tp):
        report = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for name, kind in MODELS.items():
            core = report[f"{name} core"]
            assert core["causal"] < TOLERANCE and core["mask"] < TOLERANCE, f"{kind} tp{tp} rank {rank}: {core}"
            model = report[name]
            assert model["core attention"] == "SdpaAttention"
            assert model["same keys"], f"{name}: the SDPA model's state-dict keys differ from the unfused one's"
            assert model["logits"] < TOLERANCE and model["grads"] < TOLERANCE, f"{kind} tp{tp} rank {rank}: {model}"


@pytest.mark.slow
def test_twenty_steps_give_the_same_loss_curve(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    procs = {
        attention: start(
            launch_argv(
                1,
                [
                    "--train-iters",
                    "20",
                    "--attention",
                    attention,
                    "--save",
                    str(ws / attention),
                    "--metrics",
                    str(ws / f"{attention}.jsonl"),
                ],
            ),
            ws,
        )
        for attention in ("unfused", "sdpa")
    }
    outs = {attention: finish(p) for attention, p in procs.items()}
    assert "attention sdpa" in outs["sdpa"] and "attention unfused" in outs["unfused"]
    ref, sdpa = losses(ws / "unfused.jsonl"), losses(ws / "sdpa.jsonl")
    assert sorted(ref) == sorted(sdpa) == list(range(1, 21))
    assert ref[20] < ref[1] - 0.05, "the loss should go down in 20 steps"
    worst = max(abs(ref[i] - sdpa[i]) for i in ref)
    assert worst < TOLERANCE, f"losses differ by up to {worst:.2e}"


def test_an_unknown_attention_is_refused_with_the_choices():
    from llm.errors import NpuboxError
    from llm.sdpa_attention import core_attention

    with pytest.raises(NpuboxError, match="attention 'flash': expected one of sdpa, unfused"):
        core_attention("flash")
