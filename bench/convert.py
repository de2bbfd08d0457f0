"""Benchmark `python -m llm convert` on a checkpoint with the real qwen25-7b shapes (~15 GB bf16).

    .venv/bin/python bench/convert.py [--work-dir DIR] [--model qwen25-7b] [--tp 4] [--pp 2]

1. Generates random bf16 weights with the recipe's HF names and shapes, one safetensors shard at a
   time (so this script never holds the model either), plus config.json and the index.
2. Anchor: copies the same files with `cp` on the same disk and fsyncs them (`sync FILE...`),
   the least a conversion that writes every byte once must cost. The copy is deleted at once.
3. Runs `python -m llm convert --from hf --to mcore --tp 4 --pp 2` as a child process and reads
   its peak RSS from the kernel (os.wait4).
4. Deletes the HF files, copies the rank files the same way (the anchor of the way back), and runs
   `python -m llm convert --from mcore --to hf` on them.

Prints, for both directions, wall times, peak RSS and the ratios against the targets: peak RSS ≤ 25 %
of the checkpoint size, time ≤ 2 × the copy of the source's bytes. At most two checkpoints are on the
disk at once (about 30 GB for qwen25-7b). Everything lives in a temporary directory under --work-dir (default: the
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


def copy_anchor(files: list[Path], work: Path) -> tuple[float, float, float]:
    """`cp` of ``files`` into a fresh folder on the same disk, then `sync FILE...`: (cp + fsync s, cp s, cp CPU s).
    The copy is deleted at once."""
    copy = work / "copy"
    copy.mkdir()
    cp_plain, cp_cpu, _ = timed(["cp", *map(str, files), str(copy)])
    sync_time, _, _ = timed(["sync", *(str(copy / f.name) for f in files)])
    shutil.rmtree(copy)
    return cp_plain + sync_time, cp_plain, cp_cpu


def convert(argv: list[str]) -> tuple[float, float, int]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    return timed([sys.executable, "-m", "llm", "convert", *argv], env=env)


def report(title: str, size: int, written: int, conv: tuple[float, float, int], anchor: tuple[float, float, float]):
    conv_time, conv_cpu, rss = conv
    cp_time, cp_plain, cp_cpu = anchor
    print(f"{title}")
    print(f"  source              {size / GiB:8.2f} GiB")
    print(f"  written             {written / GiB:8.2f} GiB")
    print(f"  convert wall time   {conv_time:8.1f} s")
    print(f"  cp + fsync          {cp_time:8.1f} s    (cp alone {cp_plain:.1f} s, of the source's bytes)")
    print(f"  time ratio          {conv_time / cp_time:8.2f} x   (target <= 2.00)")
    print(f"  CPU seconds         {conv_cpu:8.1f} s    (cp {cp_cpu:.1f} s)")
    print(f"  peak RSS            {rss / GiB:8.2f} GiB")
    print(f"  RSS / checkpoint    {100 * rss / size:8.1f} %   (target <= 25 %)")


def tree_files(root: Path) -> list[Path]:
    return sorted(f for f in root.rglob("*") if f.is_file())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work-dir", type=Path, default=None, help="where the temporary data goes (same disk for all)")
    p.add_argument("--model", default="qwen25-7b")
    p.add_argument("--tp", type=int, default=4)
    p.add_argument("--pp", type=int, default=2)
    p.add_argument("--shard-gb", type=float, default=2.0, help="HF shard size of the generated checkpoint")
    p.add_argument("--generate-into", type=Path, help=argparse.SUPPRESS)  # the child process that makes the weights
    args = p.parse_args()
    recipe = load_recipe(args.model)
    if args.generate_into:
        generate(recipe, args.generate_into, int(args.shard_gb * GiB))
        return 0

    work = Path(tempfile.mkdtemp(prefix="npubox-bench-convert-", dir=args.work_dir))
    try:
        hf = work / "hf"
        print(f"generating random {args.model} (bf16) in {hf} ...", flush=True)
        t0 = time.monotonic()
        # In a child: a child's peak RSS as the kernel reports it includes what it was forked from, so this process
        # stays small (no torch) and every figure below is the measured command's own.
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--model",
                args.model,
                "--shard-gb",
                str(args.shard_gb),
                "--generate-into",
                str(hf),
            ],
            check=True,
        )
        hf_files = tree_files(hf)
        hf_bytes = sum(f.stat().st_size for f in hf_files)
        print(f"generated {hf_bytes / GiB:.2f} GiB in {time.monotonic() - t0:.1f}s", flush=True)

        anchor_fwd = copy_anchor(hf_files, work)
        print(f"cp + fsync of the HF files: {anchor_fwd[0]:.1f}s", flush=True)
        load = os.getloadavg()[0]
        mcore = work / "mcore"
        fwd = convert(
            [
                "--model",
                args.model,
                "--load-dir",
                str(hf),
                "--save-dir",
                str(mcore),
                "--tp",
                str(args.tp),
                "--pp",
                str(args.pp),
            ]
        )
        mcore_files = tree_files(mcore)
        mcore_bytes = sum(f.stat().st_size for f in mcore_files)
        shutil.rmtree(hf)  # the disk holds two checkpoints at most

        nested = [f for f in mcore_files if f.name == "model_optim_rng.pt"]
        flat = work / "flat"  # cp's anchor for the rank files: the same bytes as one folder of files
        flat.mkdir()
        for i, f in enumerate(nested):
            os.link(f, flat / f"{i:03d}.pt")
        anchor_back = copy_anchor(sorted(flat.iterdir()), work)
        shutil.rmtree(flat)
        print(f"cp + fsync of the rank files: {anchor_back[0]:.1f}s", flush=True)
        back = work / "back"
        rev = convert(
            ["--model", args.model, "--from", "mcore", "--to", "hf", "--load-dir", str(mcore), "--save-dir", str(back)]
        )
        back_bytes = sum(f.stat().st_size for f in tree_files(back))

        print()
        print(f"{args.model}, bf16, {len(hf_files) - 2} HF shards; {os.cpu_count()} cores, load average {load:.1f}")
        report(f"HF -> mcore tp{args.tp} pp{args.pp}", hf_bytes, mcore_bytes, fwd, anchor_fwd)
        report(f"mcore tp{args.tp} pp{args.pp} -> HF", mcore_bytes, back_bytes, rev, anchor_back)
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
