"""Acceptance 2: megatron-core's own GPTModel, built from the recipe (llm.model) and loaded from our
checkpoint with strict=True, gives the logits transformers gives on the same HF weights.

CPU + gloo with llm.accel's shims; TP1 runs in one process, TP2 in two (torch.multiprocessing spawn,
127.0.0.1). Each spawned job loads every family's checkpoint in turn. fp32, max |Δ| < 1e-4.

Qwen v1 has no transformers class (its modeling code is remote code on the hub). Its reference
is transformers' Qwen2ForCausalLM with the v1 weights renamed by hand as Qwen v1's own modeling
code defines them: ``c_attn`` rows are [q; k; v] (``split(split_size, dim=2)``), and the MLP is
``c_proj(w1(x) * silu(w2(x)))`` so ``w2`` is the gate and ``w1`` the up projection.
"""

from __future__ import annotations

import os
import socket

import pytest

from _convert_fixtures import make_hf
from llm.convert import main as convert

torch = pytest.importorskip("torch")
pytest.importorskip("megatron.core")
pytest.importorskip("transformers")

MODELS = ["tiny-qwen", "tiny", "tiny-tied", "tiny-llama"]
TOLERANCE = 1e-4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tokens():
    return torch.randint(0, 2000, (2, 24), generator=torch.Generator().manual_seed(1))


def _megatron_worker(rank: int, world: int, port: int, jobs: list[tuple[str, str]], out_dir: str) -> None:
    """One TP rank: build GPTModel per model, load our rank file strictly, save this rank's logits."""
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    from llm import accel as accel_mod

    accel = accel_mod.detect("cpu")
    from llm import checkpoint
    from llm.distributed import destroy_distributed, init_distributed
    from llm.model import build_gpt_model
    from llm.recipes import load_recipe

    dist = init_distributed(tp=world, pp=1, accel=accel)
    accel.model_parallel_seed(0)  # megatron forks its model-parallel RNG stream in attention
    try:
        for model_name, ckpt in jobs:
            recipe = load_recipe(model_name)
            gpt = build_gpt_model(recipe, tp=world, pp=1, accel=accel)
            state = checkpoint.load_rank(ckpt, checkpoint.read_latest(ckpt), dist.tp_rank, 0, 1)
            gpt.load_state_dict(state["model"], strict=True)
            gpt.eval()
            tokens = _tokens()
            positions = torch.arange(tokens.shape[1]).unsqueeze(0).expand_as(tokens)
            with torch.no_grad():
                logits = gpt(tokens, positions, attention_mask=None)
            torch.save(logits, os.path.join(out_dir, f"{model_name}-rank{rank}.pt"))
    finally:
        destroy_distributed()


def _qwen_v1_as_qwen2(hf_dir):
    """transformers' Qwen2 model holding a Qwen v1 checkpoint's weights (renamed independently of llm.convert)."""
    import json

    from safetensors.torch import load_file
    from transformers import Qwen2Config, Qwen2ForCausalLM

    v1 = json.loads((hf_dir / "config.json").read_text())
    w = load_file(hf_dir / "model.safetensors")
    config = Qwen2Config(
        hidden_size=v1["hidden_size"],
        intermediate_size=v1["intermediate_size"] // 2,
        num_hidden_layers=v1["num_hidden_layers"],
        num_attention_heads=v1["num_attention_heads"],
        num_key_value_heads=v1["num_attention_heads"],
        vocab_size=v1["vocab_size"],
        max_position_embeddings=v1["max_position_embeddings"],
        rope_theta=v1["rotary_emb_base"],
        rms_norm_eps=v1["layer_norm_epsilon"],
        tie_word_embeddings=False,
    )
    state = {
        "model.embed_tokens.weight": w["transformer.wte.weight"],
        "model.norm.weight": w["transformer.ln_f.weight"],
        "lm_head.weight": w["lm_head.weight"],
    }
    for i in range(config.num_hidden_layers):
        v, m = f"transformer.h.{i}.", f"model.layers.{i}."
        for kind in ("weight", "bias"):
            q, k, vv = w[v + f"attn.c_attn.{kind}"].chunk(3)
            state.update(
                {
                    m + f"self_attn.q_proj.{kind}": q,
                    m + f"self_attn.k_proj.{kind}": k,
                    m + f"self_attn.v_proj.{kind}": vv,
                }
            )
        state.update(
            {
                m + "self_attn.o_proj.weight": w[v + "attn.c_proj.weight"],
                m + "input_layernorm.weight": w[v + "ln_1.weight"],
                m + "post_attention_layernorm.weight": w[v + "ln_2.weight"],
                m + "mlp.gate_proj.weight": w[v + "mlp.w2.weight"],
                m + "mlp.up_proj.weight": w[v + "mlp.w1.weight"],
                m + "mlp.down_proj.weight": w[v + "mlp.c_proj.weight"],
            }
        )
    model = Qwen2ForCausalLM(config)
    model.load_state_dict(state, strict=True)
    return model


def _hf_logits(model_name, hf_dir):
    from transformers import AutoModelForCausalLM

    if model_name == "tiny-qwen":
        model = _qwen_v1_as_qwen2(hf_dir)
    else:
        model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        return model(_tokens()).logits


@pytest.mark.slow
@pytest.mark.parametrize("tp", [1, 2])
def test_megatron_gptmodel_logits_match_transformers(tp, tmp_path_factory):
    import torch.multiprocessing as mp

    root = tmp_path_factory.mktemp(f"logits-tp{tp}")
    jobs = []
    for model in MODELS:
        hf = make_hf(root / "hf", model)
        ckpt = root / f"{model}-tp{tp}"
        argv = ["--model", model, "--load-dir", str(hf), "--save-dir", str(ckpt), "--tp", str(tp), "--pp", "1"]
        assert convert(argv) == 0
        jobs.append((model, str(ckpt)))
    mp.start_processes(
        _megatron_worker, args=(tp, _free_port(), jobs, str(root)), nprocs=tp, join=True, start_method="spawn"
    )
    for model, _ in jobs:
        expected = _hf_logits(model, root / "hf" / model / "hf")
        shards = [torch.load(root / f"{model}-rank{r}.pt", weights_only=True) for r in range(tp)]
        got = torch.cat(shards, dim=-1)[..., : expected.shape[-1]]
        diff = (got - expected).abs().max().item()
        print(f"{model} tp{tp}: max |megatron - transformers| = {diff:.3g} (logits std {expected.std():.3g})")
        assert expected.std() > 100 * TOLERANCE  # the comparison is not trivially small
        assert diff < TOLERANCE, f"{model} tp{tp}: max abs diff {diff}"
