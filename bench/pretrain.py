"""Benchmark `python -m llm pretrain` against bare megatron-core and a plain transformers training loop.

    .venv/bin/python bench/pretrain.py                      # CPU: tiny recipe, seq 128, fp32, no MFU
    python bench/pretrain.py --model qwen25-0.5b --steps 20 --rounds 1                # on a GPU / NPU
    python bench/pretrain.py --model qwen25-1.5b --seq-length 4096 --micro-batch-size 2 \\
        --global-batch-size 8 --steps 15 --rounds 1

Four sides train the same recipe's architecture on batches of the same shape (micro-batch ×
sequence, gradient accumulation up to the global batch), in one process (world size 1) each, one
after the other (``--rounds`` times, alternating, so that load on a shared machine hits all):

- ``llm pretrain``: the real phase (``python -m llm pretrain``'s entry point, in a child process);
  per-step times (optimizer step, logging, LR schedule, loss reduction included) from its JSONL.
- ``bare megatron-core``: llm pretrain's GPTModel (:func:`llm.model.build_gpt_model`: the local
  spec, the same core attention) in what a user writes with megatron-core alone: DDP,
  ``get_megatron_optimizer``, ``get_forward_backward_func``, ``optimizer.step()`` in a loop, timed
  around the same region; on CPU with llm.accel's shims, installed before the loop.
- ``transformers eager`` / ``transformers compiled``: the recipe's transformers model
  (``AutoModelForCausalLM.from_config``, ``attn_implementation="sdpa"``), fp32 weights under bf16
  autocast (fp32 on CPU), fused AdamW, grad clipping; the second with ``torch.compile``. Random
  token batches already on the device. Qwen v1 recipes have no transformers class: n/a.

The first ``--warmup`` steps of every run are dropped (compilation included); the figure is the
median step time. Printed per side: step time, tokens/s per device, MFU with Megatron's FLOPs
formula against the datasheet peak (910B1–B4, H100, H200) and against a bf16 matmul peak this
script measures (8192³ GEMMs), and peak memory (device: ``max_memory_allocated``; CPU: the
process's peak RSS). Then the ratio llm / bare (target ≤ 1.05). On CPU every side runs with
OMP_NUM_THREADS=1 unless it is set.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SIDES = {
    "llm": "llm pretrain",
    "bare": "bare megatron-core",
    "hf": "transformers eager",
    "hf-compiled": "transformers compiled",
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--model", help="recipe; default: tiny on CPU, qwen25-0.5b on an accelerator")
    p.add_argument("--seq-length", type=int, help="default: 128 on CPU, 2048 on an accelerator")
    p.add_argument("--micro-batch-size", type=int, default=4)
    p.add_argument("--global-batch-size", type=int, help="default: 2 micro-batches (gradient accumulation)")
    p.add_argument("--steps", type=int, default=30, help="steps per run")
    p.add_argument("--warmup", type=int, default=5, help="steps dropped at the start of each run")
    p.add_argument("--rounds", type=int, default=2, help="runs of every side")
    p.add_argument("--bf16", action="store_true", help="default: on for an accelerator, off on CPU")
    p.add_argument("--sides", default=",".join(SIDES), help=f"which of {', '.join(SIDES)} to run")
    p.add_argument(
        "--attention",
        choices=["sdpa", "unfused"],
        help="llm pretrain's and bare's core attention; default: the device's (llm.accel)",
    )
    p.add_argument("--fusions", default="none", help="llm pretrain's and bare's --fusions (llm.fusions)")
    p.add_argument("--work-dir", help="where the dataset and checkpoints go (default: a temporary directory)")
    p.add_argument("--side", choices=[*SIDES, "matmul"], help=argparse.SUPPRESS)  # internal: run one side
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


def peak_memory(accel) -> float:
    """Bytes: the device's peak allocation, or (CPU) this process's peak resident set."""
    import torch

    if accel.kind == "cpu":
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0
    return float(torch.cuda.max_memory_allocated())  # NPU: routed by transfer_to_npu


# --- the sides, each in its own process --------------------------------------------------------


def llm_side(args, accel) -> list[float]:
    """The real phase through `python -m llm`'s entry point, in this process (for its peak memory)."""
    from llm.__main__ import main as llm_main

    work = Path(args.out).parent
    metrics = Path(args.out).with_suffix(".jsonl")
    os.environ["NPUBOX_WORKSPACE"] = str(work)
    argv = [
        "pretrain",
        "--model",
        args.model,
        "--data-path",
        args.data_path,
        "--seq-length",
        str(args.seq_length),
        "--micro-batch-size",
        str(args.micro_batch_size),
        "--global-batch-size",
        str(args.global_batch_size),
        "--train-iters",
        str(args.steps),
        "--save",
        str(work / f"ckpt-{Path(args.out).stem}"),
        "--save-interval",
        str(10**9),
        "--metrics",
        str(metrics),
        "--no-progress",
        "--bf16" if args.bf16 else "--fp32",
        "--seed",
        "42",
        "--fusions",
        args.fusions,
    ]
    argv += ["--attention", args.attention] if args.attention else []
    if llm_main(argv) != 0:
        raise SystemExit("llm pretrain failed")
    return [json.loads(line)["step_time_s"] for line in metrics.read_text().splitlines()]


def bare_side(args, accel) -> list[float]:
    """The megatron-core loop, written out around llm.model's GPTModel: no llm.pretrain."""
    import torch
    import torch.distributed as torch_dist
    from megatron.core import parallel_state
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.pipeline_parallel import get_forward_backward_func
    from torch.utils.data import default_collate

    from llm.compat import build_gpt_dataset
    from llm.distributed import free_port
    from llm.fusions import parse_fusions, set_fused_adam
    from llm.model import build_gpt_model
    from llm.recipes import load_recipe

    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    accel.set_device(0)
    torch_dist.init_process_group(backend=accel.backend, rank=0, world_size=1)
    parallel_state.initialize_model_parallel(1, 1)
    accel.model_parallel_seed(42)
    recipe = load_recipe(args.model)
    a = recipe.architecture
    fusions = parse_fusions(args.fusions)
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    model = build_gpt_model(
        recipe, dtype=dtype, seq_length=args.seq_length, accel=accel, attention=args.attention, fusions=fusions
    )
    config = model.config
    if "compile" in fusions:
        model.compile()
    ddp = DistributedDataParallel(
        config, DistributedDataParallelConfig(grad_reduce_in_fp32=True, use_distributed_optimizer=True), model
    )
    optimizer = get_megatron_optimizer(
        OptimizerConfig(
            optimizer="adam",
            lr=1e-4,
            weight_decay=0.1,
            adam_beta2=0.95,
            clip_grad=1.0,
            bf16=args.bf16,
            params_dtype=dtype,
            use_distributed_optimizer=True,
        ),
        [ddp],
    )
    set_fused_adam(optimizer, "adam" in fusions)
    config.finalize_model_grads_func = finalize_model_grads
    config.grad_scale_func = optimizer.scale_loss

    dataset = build_gpt_dataset(
        args.data_path,
        args.seq_length,
        args.steps * args.global_batch_size,
        42,
        str(Path(args.data_path).parent / "cache"),
        a.vocab_size,
    )
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
        losses = forward_backward(
            forward_step_func=forward_step,
            data_iterator=batches,
            model=[ddp],
            num_microbatches=nmb,
            seq_length=args.seq_length,
            micro_batch_size=mbs,
            forward_only=False,
        )
        optimizer.step()
        _loss = sum(float(d["lm loss"]) for d in losses) / len(losses)
        accel.synchronize()
        times.append(time.perf_counter() - t0)
    torch_dist.destroy_process_group()
    return times


def hf_side(args, accel, compiled: bool) -> list[float]:
    """A plain PyTorch training loop on the recipe's transformers model."""
    import torch
    import transformers

    from llm.recipes import load_recipe
    from llm.recipes.hfconfig import hf_config

    recipe = load_recipe(args.model)
    if recipe.family == "qwen":
        raise SystemExit(f"{args.model}: Qwen v1 has no transformers class")
    fields = hf_config(recipe, "float32")
    model_type = fields.pop("model_type")
    for key in ("architectures", "torch_dtype"):
        fields.pop(key, None)
    config = transformers.AutoConfig.for_model(model_type, **fields)
    torch.manual_seed(42)
    device = accel.device(0)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").to(device).train()
    if compiled:
        model.compile()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    mbs, nmb = args.micro_batch_size, args.global_batch_size // args.micro_batch_size
    gen = torch.Generator().manual_seed(0)
    batches = [
        torch.randint(0, recipe.architecture.vocab_size, (mbs, args.seq_length), generator=gen).to(device)
        for _ in range(nmb)
    ]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        for tokens in batches:
            with autocast:
                loss = model(input_ids=tokens, labels=tokens).loss
            (loss / nmb).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _loss = float(loss)
        accel.synchronize()
        times.append(time.perf_counter() - t0)
    return times


def matmul_side(args, accel) -> float:
    """TFLOP/s of the best of ten timed batches of bf16 8192³ GEMMs: the peak these kernels reach here."""
    import torch

    n = 8192
    device = accel.device(0)
    x, y = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(5):
        x @ y
    best = 0.0
    for _ in range(10):
        accel.synchronize()
        t0 = time.perf_counter()
        for _ in range(10):
            x @ y
        accel.synchronize()
        best = max(best, 10 * 2 * n**3 / (time.perf_counter() - t0) / 1e12)
    return best


def run_side(args, accel) -> dict:
    if args.side == "matmul":
        return {"tflops": matmul_side(args, accel)}
    if args.side == "llm":
        times = llm_side(args, accel)
    elif args.side == "bare":
        times = bare_side(args, accel)
    else:
        times = hf_side(args, accel, compiled=args.side == "hf-compiled")
    return {"times": times, "peak_memory": peak_memory(accel)}


# --- the parent: data, runs, table ------------------------------------------------------------


def child(args, side: str, work: Path, tag: str) -> dict | None:
    out = work / f"{side}-{tag}.json"
    cmd = [
        sys.executable,
        __file__,
        "--side",
        side,
        "--out",
        str(out),
        "--model",
        args.model,
        "--data-path",
        str(args.data_path),
        "--seq-length",
        str(args.seq_length),
        "--micro-batch-size",
        str(args.micro_batch_size),
        "--global-batch-size",
        str(args.global_batch_size),
        "--steps",
        str(args.steps),
        "--fusions",
        args.fusions,
    ] + (["--bf16"] if args.bf16 else [])
    cmd += ["--attention", args.attention] if args.attention else []
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        print(f"{SIDES.get(side, side)}: failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
        return None
    return json.loads(out.read_text())


def main(argv=None) -> int:
    warnings.filterwarnings("ignore", category=UserWarning, module="megatron")  # "Apex is not installed", ...
    args = parse_args(argv)
    from llm.accel import detect

    accel = detect()
    fill_defaults(args, accel)
    if accel.kind == "cpu":  # all sides alike; one thread each is steadier on a shared machine
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.side:
        warnings.filterwarnings("ignore")
        Path(args.out).write_text(json.dumps(run_side(args, accel)))
        return 0
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    unknown = [s for s in sides if s not in SIDES]
    if unknown:
        raise SystemExit(f"--sides: unknown {', '.join(unknown)}; expected some of {', '.join(SIDES)}")
    from llm.pretrain.metrics import flops_per_step
    from llm.recipes import load_recipe

    recipe = load_recipe(args.model)
    results: dict[str, dict] = {s: {"times": [], "peak_memory": 0.0} for s in sides}
    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        work = Path(tmp)
        prefix = work / "data" / "bench_text_document"
        prefix.parent.mkdir(parents=True)
        samples = args.steps * args.global_batch_size
        write_dataset(prefix, recipe.architecture.vocab_size, 2 * samples * (args.seq_length + 1))
        args.data_path = str(prefix)
        matmul = child(args, "matmul", work, "0") if accel.kind != "cpu" else None
        for r in range(args.rounds):
            for side in sides:
                got = child(args, side, work, str(r))
                if got is None:
                    results[side]["failed"] = True
                    continue
                results[side]["times"] += got["times"][args.warmup :]
                results[side]["peak_memory"] = max(results[side]["peak_memory"], got["peak_memory"])

    tokens = args.global_batch_size * args.seq_length
    flops = flops_per_step(recipe, args.seq_length, args.global_batch_size)
    peaks = {"datasheet": accel.peak_tflops, "matmul": matmul["tflops"] if matmul else None}
    print(
        f"device: {accel.kind} ({accel.device_name}); model {args.model}, seq {args.seq_length}, micro-batch "
        f"{args.micro_batch_size}, global batch {args.global_batch_size}, {'bf16' if args.bf16 else 'fp32'}; "
        f"attention {args.attention or accel.attention}, fusions {args.fusions}; "
        f"median of {args.steps - args.warmup} steps × {args.rounds} round(s) per side"
    )
    print("peak: " + ", ".join(f"{k} {v:.0f} TFLOP/s" if v else f"{k} n/a" for k, v in peaks.items()))
    memory = "peak RSS" if accel.kind == "cpu" else "peak mem"
    print(f"{'side':<24}{'step ms':>10}{'tokens/s':>12}{'MFU sheet':>11}{'MFU matmul':>12}{memory + ' GiB':>14}")
    medians = {}
    for side in sides:
        times = results[side]["times"]
        if not times:
            print(f"{SIDES[side]:<24}{'failed' if results[side].get('failed') else 'n/a':>10}")
            continue
        s = medians[side] = statistics.median(times)
        mfu = [f"{100 * flops / s / (p * 1e12):.1f}%" if p else "n/a" for p in peaks.values()]
        print(
            f"{SIDES[side]:<24}{1000 * s:>10.1f}{tokens / s:>12,.0f}{mfu[0]:>11}{mfu[1]:>12}"
            f"{results[side]['peak_memory'] / 2**30:>14.2f}"
        )
    if "llm" in medians and "bare" in medians:
        print(f"overhead ratio llm/bare: {medians['llm'] / medians['bare']:.3f}   (target <= 1.05)")
    for other in ("hf", "hf-compiled"):
        if "llm" in medians and other in medians:
            print(f"tokens/s ratio llm pretrain / {SIDES[other]}: {medians[other] / medians['llm']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
