"""Benchmark `python -m llm pretrain` against a bare megatron-core training loop.

    .venv/bin/python bench/pretrain.py                      # CPU: tiny recipe, seq 128
    python bench/pretrain.py --model qwen25-0.5b            # on a GPU / NPU: also prints MFU

Both sides train the same recipe's GPTModel (megatron-core local spec), from the same random init,
on the same GPTDataset samples and batch shape, in one process (world size 1) each:

- ``llm pretrain``: the real phase, `python -m llm pretrain ... --metrics FILE`; per-step times
  (optimizer step included, logging, LR schedule and loss reduction included) from its JSONL.
- bare: what a user writes with megatron-core alone (``bench/pretrain.py --bare``): TransformerConfig,
  GPTModel, DDP, ``get_megatron_optimizer``, ``get_forward_backward_func``, ``optimizer.step()``
  in a loop, timed around the same region. On CPU it needs the same two shims as any megatron-core
  CPU run, installed by ``llm.accel`` before the loop starts (outside the timed region).

On CPU both run with OMP_NUM_THREADS=1 unless it is set. The runs alternate (llm, bare, llm, bare ...) so that load on a shared machine hits both; the
first ``--warmup`` steps of every run are dropped; the figure is the median step time. Prints both,
the overhead ratio llm / bare (target ≤ 1.05), tokens/s per device and, where the device has a
known peak (910B1–B4, H100, H200), MFU with Megatron's FLOPs formula.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", help="recipe; default: tiny on CPU, qwen25-0.5b on an accelerator")
    p.add_argument("--seq-length", type=int, help="default: 128 on CPU, 2048 on an accelerator")
    p.add_argument("--micro-batch-size", type=int, default=4)
    p.add_argument("--global-batch-size", type=int, help="default: 2 micro-batches (gradient accumulation)")
    p.add_argument("--steps", type=int, default=30, help="steps per run")
    p.add_argument("--warmup", type=int, default=5, help="steps dropped at the start of each run")
    p.add_argument("--rounds", type=int, default=2, help="llm/bare pairs of runs")
    p.add_argument("--bf16", action="store_true", help="default: on for an accelerator, off on CPU")
    p.add_argument("--work-dir", help="where the dataset and checkpoints go (default: a temporary directory)")
    p.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)  # internal: run the bare loop
    p.add_argument("--data-path", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def fill_defaults(args, accel):
    on_cpu = accel.kind == "cpu"
    args.model = args.model or ("tiny" if on_cpu else "qwen25-0.5b")
    args.seq_length = args.seq_length or (128 if on_cpu else 2048)
    args.global_batch_size = args.global_batch_size or 2 * args.micro_batch_size
    args.bf16 = args.bf16 or not on_cpu
    return args


def write_dataset(prefix: Path, vocab: int, tokens: int) -> None:
    import numpy as np
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    rng = np.random.default_rng(0)
    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=np.int32)
    written = 0
    while written < tokens:
        n = int(rng.integers(256, 4096))
        builder.add_document(torch.from_numpy(rng.integers(0, vocab, n, dtype=np.int32)), [n])
        written += n
    builder.finalize(f"{prefix}.idx")


def bare_loop(args) -> list[float]:
    """The megatron-core loop, written out: no llm.model, no llm.pretrain."""
    from llm.accel import detect

    accel = detect()
    import torch
    import torch.distributed as torch_dist
    import torch.nn.functional as F
    from megatron.core import parallel_state
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.pipeline_parallel import get_forward_backward_func
    from megatron.core.tokenizers.text.libraries.null_tokenizer import NullTokenizer
    from megatron.core.transformer import TransformerConfig
    from torch.utils.data import default_collate

    from llm.recipes import load_recipe

    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29555")
    accel.set_device(0)
    torch_dist.init_process_group(backend=accel.backend, rank=0, world_size=1)
    parallel_state.initialize_model_parallel(1, 1)
    accel.model_parallel_seed(42)
    a = load_recipe(args.model).architecture
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    config = TransformerConfig(
        num_layers=a.num_layers, hidden_size=a.hidden_size, ffn_hidden_size=a.ffn_hidden_size,
        num_attention_heads=a.num_attention_heads, num_query_groups=a.num_query_groups, kv_channels=a.head_dim,
        normalization="RMSNorm", layernorm_epsilon=a.norm_epsilon, gated_linear_unit=True, activation_func=F.silu,
        add_bias_linear=False, add_qkv_bias=a.add_qkv_bias, hidden_dropout=0.0, attention_dropout=0.0,
        init_method_std=0.01, params_dtype=dtype, pipeline_dtype=dtype, bf16=args.bf16,
        use_cpu_initialization=accel.kind == "cpu", bias_activation_fusion=False, masked_softmax_fusion=False,
        persist_layer_norm=False, bias_dropout_fusion=False, apply_rope_fusion=False, gradient_accumulation_fusion=False,
    )
    model = GPTModel(config, get_gpt_layer_local_spec(normalization="RMSNorm"), a.padded_vocab_size(1), args.seq_length,
                     share_embeddings_and_output_weights=a.tie_embeddings, position_embedding_type="rope",
                     rotary_base=int(a.rotary_base))
    use_dist_opt = accel.supports_distributed_optimizer
    ddp = DistributedDataParallel(config, DistributedDataParallelConfig(
        grad_reduce_in_fp32=True, use_distributed_optimizer=use_dist_opt), model)
    optimizer = get_megatron_optimizer(OptimizerConfig(
        optimizer="adam", lr=1e-4, weight_decay=0.1, adam_beta2=0.95, clip_grad=1.0, bf16=args.bf16,
        params_dtype=dtype, use_distributed_optimizer=use_dist_opt), [ddp])
    config.finalize_model_grads_func = finalize_model_grads
    config.grad_scale_func = optimizer.scale_loss

    data_config = GPTDatasetConfig(
        random_seed=42, sequence_length=args.seq_length, blend=([args.data_path], None), split="100,0,0",
        path_to_cache=str(Path(args.data_path).parent / "cache"), tokenizer=NullTokenizer(a.vocab_size),
        reset_position_ids=False, reset_attention_mask=False, eod_mask_loss=False, create_attention_mask=False,
    )
    dataset = BlendedMegatronDatasetBuilder(GPTDataset, [args.steps * args.global_batch_size, 0, 0], lambda: True,
                                            data_config).build()[0]
    mbs, nmb = args.micro_batch_size, args.global_batch_size // args.micro_batch_size
    device = next(model.parameters()).device
    batches = (default_collate([dataset[i] for i in range(k * mbs, (k + 1) * mbs)]) for k in range(args.steps * nmb))

    def forward_step(it, model):
        b = {k: v.to(device) for k, v in next(it).items()}
        out = model(b["tokens"], b["position_ids"], None, labels=b["labels"])
        mask = b["loss_mask"].float().view(-1)

        def loss_fn(output):
            loss = (output.float().view(-1) * mask).sum() / mask.sum()
            return loss, {"lm loss": loss.detach().clone()}

        return out, loss_fn

    forward_backward = get_forward_backward_func()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        ddp.zero_grad_buffer()
        optimizer.zero_grad()
        losses = forward_backward(forward_step_func=forward_step, data_iterator=batches, model=[ddp],
                                  num_microbatches=nmb, seq_length=args.seq_length, micro_batch_size=mbs, forward_only=False)
        optimizer.step()
        _loss = sum(float(d["lm loss"]) for d in losses) / len(losses)
        accel.synchronize()
        times.append(time.perf_counter() - t0)
    torch_dist.destroy_process_group()
    return times


def run_llm(args, work: Path, tag: str) -> tuple[list[float], list[float | None]]:
    metrics = work / f"llm-{tag}.jsonl"
    cmd = [sys.executable, "-m", "llm", "pretrain", "--model", args.model, "--data-path", args.data_path,
           "--seq-length", str(args.seq_length), "--micro-batch-size", str(args.micro_batch_size),
           "--global-batch-size", str(args.global_batch_size), "--train-iters", str(args.steps),
           "--save", str(work / f"ckpt-{tag}"), "--save-interval", str(10 ** 9), "--metrics", str(metrics),
           "--no-progress", "--bf16" if args.bf16 else "--fp32", "--seed", "42"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "NPUBOX_WORKSPACE": str(work), "PYTHONWARNINGS": "ignore"}
    subprocess.run(cmd, check=True, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    return [r["step_time_s"] for r in records], [r["mfu"] for r in records]


def run_bare(args, work: Path, tag: str) -> list[float]:
    out = work / f"bare-{tag}.json"
    cmd = [sys.executable, __file__, "--bare", "--out", str(out), "--model", args.model, "--data-path", args.data_path,
           "--seq-length", str(args.seq_length), "--micro-batch-size", str(args.micro_batch_size),
           "--global-batch-size", str(args.global_batch_size), "--steps", str(args.steps)] + (["--bf16"] if args.bf16 else [])
    subprocess.run(cmd, check=True, cwd=REPO, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return json.loads(out.read_text())


def main(argv=None) -> int:
    warnings.filterwarnings("ignore", category=UserWarning, module="megatron")  # "Apex is not installed", ...
    args = parse_args(argv)
    from llm.accel import detect

    accel = detect()
    fill_defaults(args, accel)
    if accel.kind == "cpu":  # both sides alike; one thread each is steadier on a shared machine
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.bare:
        Path(args.out).write_text(json.dumps(bare_loop(args)))
        return 0
    from llm.pretrain.metrics import flops_per_step
    from llm.recipes import load_recipe

    recipe = load_recipe(args.model)
    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        work = Path(tmp)
        prefix = work / "data" / "bench_text_document"
        prefix.parent.mkdir(parents=True)
        write_dataset(prefix, recipe.architecture.vocab_size, args.steps * args.global_batch_size * (args.seq_length + 1) * 2)
        args.data_path = str(prefix)
        llm_times, bare_times, mfus = [], [], []
        for r in range(args.rounds):
            t, m = run_llm(args, work, str(r))
            llm_times += t[args.warmup:]
            mfus += m[args.warmup:]
            bare_times += run_bare(args, work, str(r))[args.warmup:]
    llm_s, bare_s = statistics.median(llm_times), statistics.median(bare_times)
    tokens = args.global_batch_size * args.seq_length
    flops = flops_per_step(recipe, args.seq_length, args.global_batch_size)
    print(f"device: {accel.kind} ({accel.device_name}); model {args.model}, seq {args.seq_length}, "
          f"micro-batch {args.micro_batch_size}, global batch {args.global_batch_size}, {'bf16' if args.bf16 else 'fp32'}")
    print(f"steps timed: {len(llm_times)} llm pretrain, {len(bare_times)} bare megatron-core (median of each)")
    print(f"llm pretrain step: {1000 * llm_s:.2f} ms   ({tokens / llm_s:,.0f} tokens/s per device)")
    print(f"bare mcore   step: {1000 * bare_s:.2f} ms   ({tokens / bare_s:,.0f} tokens/s per device)")
    print(f"overhead ratio llm/bare: {llm_s / bare_s:.3f}   (target <= 1.05)")
    if accel.peak_tflops:
        print(f"MFU: llm pretrain {100 * flops / llm_s / (accel.peak_tflops * 1e12):.1f}%, "
              f"bare {100 * flops / bare_s / (accel.peak_tflops * 1e12):.1f}% "
              f"(peak {accel.peak_tflops:.0f} TFLOP/s bf16; pretrain's own log: {100 * statistics.median(mfus):.1f}%)")
    else:
        print("MFU: n/a (no known peak for this device)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
