"""Time megatron-core's unfused core attention against llm.sdpa_attention's SDPA one, forward + backward.

    OMP_NUM_THREADS=1 .venv/bin/python bench/attention.py     # CPU: fp32, small shapes
    python bench/attention.py --dtype bf16 --seq 2048 4096    # on a GPU

Both modules are built by megatron-core from the same TransformerConfig (world of one, TP1) and
fed the same query/key/value ([s, b, heads, head_dim], GQA as in Qwen2.5: 14 query heads, 2
key/value groups, head_dim 64); the figure is the median time of ``--iters`` forward+backward
passes after ``--warmup`` ones, and the largest |Δ| between the two outputs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--seq", type=int, nargs="+", default=[128, 512, 1024])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--heads", type=int, default=14)
    p.add_argument("--groups", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    return p.parse_args(argv)


def main(argv=None) -> int:
    warnings.filterwarnings("ignore")
    args = parse_args(argv)
    from llm.accel import detect

    accel = detect()
    import torch
    import torch.nn.functional as F
    from megatron.core.transformer import TransformerConfig
    from megatron.core.transformer.enums import AttnMaskType

    from llm.distributed import destroy_distributed, init_distributed
    from llm.sdpa_attention import core_attention

    init_distributed(1, 1, accel)
    accel.model_parallel_seed(0)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    config = TransformerConfig(
        num_layers=1,
        hidden_size=args.heads * args.head_dim,
        num_attention_heads=args.heads,
        num_query_groups=args.groups,
        kv_channels=args.head_dim,
        attention_dropout=0.0,
        activation_func=F.silu,
        bf16=dtype == torch.bfloat16,
        params_dtype=dtype,
        masked_softmax_fusion=False,
        attention_softmax_in_fp32=True,
    )
    device = accel.device(0)
    modules = {
        name: core_attention(name)(
            config=config, layer_number=1, attn_mask_type=AttnMaskType.causal, attention_type="self"
        )
        for name in ("unfused", "sdpa")
    }
    print(
        f"device: {accel.kind} ({accel.device_name}), torch {torch.__version__}, {args.dtype}, "
        f"threads {torch.get_num_threads()}; batch {args.batch}, "
        f"{args.heads} heads / {args.groups} groups × {args.head_dim}"
    )
    print(f"{'seq':>6} {'unfused ms':>11} {'sdpa ms':>9} {'speed-up':>9} {'max |Δ|':>9}")
    for s in args.seq:
        g = torch.Generator(device="cpu").manual_seed(s)
        q, k, v = (
            torch.randn(s, args.batch, n, args.head_dim, generator=g).to(device, dtype)
            for n in (args.heads, args.groups, args.groups)
        )
        times, outs = {}, {}
        for name, module in modules.items():
            runs = []
            for _ in range(args.warmup + args.iters):
                qq, kk, vv = (t.detach().requires_grad_() for t in (q, k, v))
                accel.synchronize()
                t0 = time.perf_counter()
                out = module(qq, kk, vv, None, attn_mask_type=AttnMaskType.causal)
                out.float().square().mean().backward()
                accel.synchronize()
                runs.append(time.perf_counter() - t0)
            times[name] = statistics.median(runs[args.warmup :])
            outs[name] = out.detach().float()
        diff = (outs["unfused"] - outs["sdpa"]).abs().max().item()
        print(
            f"{s:>6} {1000 * times['unfused']:>11.2f} {1000 * times['sdpa']:>9.2f} "
            f"{times['unfused'] / times['sdpa']:>8.2f}x {diff:>9.2e}"
        )
    destroy_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
