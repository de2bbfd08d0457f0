"""Benchmark `python -m llm convert` on a checkpoint with the real qwen25-7b shapes (~15 GB bf16).

    .venv/bin/python bench/convert.py [--work-dir DIR] [--model qwen25-7b] [--tp 4] [--pp 2]

1. Generates random bf16 weights with the recipe's HF names and shapes, one safetensors shard at a
   time (so this script never holds the model either), plus config.json and the index.
2. Anchor: copies the same files with `cp` on the same disk and fsyncs them (`sync FILE...`),
   the least a conversion that writes every byte once must cost. The copy is deleted at once.
3. Runs `python -m llm convert --from hf --to mcore --tp 4 --pp 2` as a child process and reads
   its peak RSS from the kernel (os.wait4).

Prints wall times, peak RSS and the ratios against the targets: peak RSS ≤ 25 % of the checkpoint
size, time ≤ 2 × the copy. Everything lives in a temporary directory under --work-dir (default: the
system temp dir; pick one on the disk you care about) and is deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llm.convert.hf import INDEX_FILE, plan_shards  # noqa: E402
from llm.convert.keymap import hf_shape  # noqa: E402
from llm.recipes import load_recipe  # noqa: E402
from llm.recipes.hfconfig import hf_config  # noqa: E402

GiB = 2**30


def generate(recipe, out: Path, shard_bytes: int) -> int:
    import torch
    from safetensors.torch import save_file

    out.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    shards = plan_shards(recipe, 2, shard_bytes)
    weight_map, total = {}, 0
    for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {}
        for key, parts in shard:
            t = torch.empty(hf_shape(recipe, parts), dtype=torch.bfloat16)
            t.normal_(0.0, 0.02, generator=gen)
            tensors[key] = t
            weight_map[key] = name
            total += t.numel() * 2
        save_file(tensors, out / name, metadata={"format": "pt"})
        del tensors
        print(f"  wrote {name}", flush=True)
    (out / INDEX_FILE).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    (out / "config.json").write_text(json.dumps(hf_config(recipe, "bfloat16"), indent=2))
    return total


def timed(argv: list[str], env=None) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (bytes) of a child process."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{argv[0]} failed with exit status {os.waitstatus_to_exitcode(status)}")
    return time.monotonic() - start, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work-dir", type=Path, default=None, help="where the temporary data goes (same disk for all)")
    p.add_argument("--model", default="qwen25-7b")
    p.add_argument("--tp", type=int, default=4)
    p.add_argument("--pp", type=int, default=2)
    p.add_argument("--shard-gb", type=float, default=2.0, help="HF shard size of the generated checkpoint")
    args = p.parse_args()
    recipe = load_recipe(args.model)

    work = Path(tempfile.mkdtemp(prefix="npubox-bench-convert-", dir=args.work_dir))
    try:
        hf = work / "hf"
        print(f"generating random {args.model} (bf16) in {hf} ...", flush=True)
        t0 = time.monotonic()
        size = generate(recipe, hf, int(args.shard_gb * GiB))
        print(f"generated {size / GiB:.2f} GiB in {time.monotonic() - t0:.1f}s", flush=True)
        files = sorted(str(f) for f in hf.iterdir())

        copy = work / "copy"
        copy.mkdir()
        cp_plain, cp_cpu, _ = timed(["cp", *files, str(copy)])
        sync_time, _, _ = timed(["sync", *(str(copy / Path(f).name) for f in files)])
        cp_time = cp_plain + sync_time
        shutil.rmtree(copy)
        print(f"cp: {cp_plain:.1f}s, cp + fsync: {cp_time:.1f}s", flush=True)

        out = work / "mcore"
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
        load = os.getloadavg()[0]
        conv_time, conv_cpu, rss = timed([sys.executable, "-m", "llm", "convert", "--model", args.model, "--load-dir", str(hf),
                                "--save-dir", str(out), "--tp", str(args.tp), "--pp", str(args.pp)], env=env)
        written = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())

        print()
        print(f"checkpoint          {size / GiB:8.2f} GiB  ({args.model}, bf16, {len(files) - 2} shards)")
        print(f"written             {written / GiB:8.2f} GiB  (tp{args.tp} pp{args.pp})")
        print(f"convert wall time   {conv_time:8.1f} s")
        print(f"cp + fsync          {cp_time:8.1f} s    (cp alone {cp_plain:.1f} s)")
        print(f"time ratio          {conv_time / cp_time:8.2f} x   (target <= 2.00)")
        print(f"CPU seconds         {conv_cpu:8.1f} s    (cp {cp_cpu:.1f} s; {os.cpu_count()} cores, load average {load:.1f} at start)")
        print(f"peak RSS            {rss / GiB:8.2f} GiB")
        print(f"RSS / checkpoint    {100 * rss / size:8.1f} %   (target <= 25 %)")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
