"""`python -m llm convert`: HF safetensors ⇄ megatron-core checkpoints, and mcore → mcore resharding."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from llm.atomic import atomic_dir
from llm.errors import NpuboxError
from llm.recipes import load_recipe
from llm.workspace import Workspace

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
DTYPE_ARG = {v: k for k, v in DTYPES.items()}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m llm convert",
        description="Convert a model between Hugging Face safetensors and megatron-core checkpoints "
        "(iter_0000001/mp_rank_TT[_PPP]/model_optim_rng.pt, local-spec keys) with any TP/PP split, "
        "or reshard a megatron-core checkpoint to another TP/PP. Streams rank by rank; the target "
        "directory is replaced atomically.",
        epilog="With only --model M: reads <workspace>/models/M/hf and writes "
        "<workspace>/checkpoints/M/hf-tp{T}-pp{P} with the recipe's convert TP/PP.",
    )
    p.add_argument("--model", required=True, help="recipe name (python -m llm recipe list)")
    p.add_argument("--from", dest="src", choices=("hf", "mcore"), default="hf", help="source format (default: hf)")
    p.add_argument("--to", dest="dst", choices=("mcore", "hf"), default="mcore", help="target format (default: mcore)")
    p.add_argument("--load-dir", type=Path, help="source directory (default for --from hf: <workspace>/models/M/hf)")
    p.add_argument("--save-dir", type=Path, help="target directory, replaced whole on success (default: "
                   "<workspace>/checkpoints/M/hf-tp{T}-pp{P} from hf, <load-dir>-tp{T}-pp{P} from mcore, "
                   "<load-dir>-hf for --to hf)")
    p.add_argument("--tp", type=int, help="target tensor-parallel size (default: the recipe's convert TP)")
    p.add_argument("--pp", type=int, help="target pipeline-parallel size (default: the recipe's convert PP)")
    p.add_argument("--num-layer-list", help="layers per pipeline stage, comma separated (e.g. 6,8,8,6); default: even")
    p.add_argument("--dtype", choices=tuple(DTYPES), help="target dtype (default: the source's)")
    p.add_argument("--tokenizer-dir", type=Path, help="--to hf: copy tokenizer files from here "
                   "(default: <workspace>/models/M/hf when it exists)")
    p.add_argument("--max-shard-size-mb", type=int, default=2048, help="--to hf: largest safetensors shard (default 2048)")
    return p


def parse_layer_list(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise NpuboxError(f"--num-layer-list {text!r}: expected comma-separated integers such as 6,8,8,6") from None


def check_tp(recipe, tp: int) -> None:
    a = recipe.architecture
    for what, value in (("num_attention_heads", a.num_attention_heads), ("num_query_groups", a.num_query_groups),
                        ("ffn_hidden_size", a.ffn_hidden_size), ("padded vocab size", a.padded_vocab_size(tp))):
        if tp < 1 or value % tp:
            raise NpuboxError(f"--tp {tp} does not divide {what} ({value}) of recipe {recipe.name}; choose a divisor of it")


def check_target(save_dir: Path, load_dir: Path) -> None:
    if save_dir.resolve() == load_dir.resolve():
        raise NpuboxError(f"--save-dir {save_dir} is the --load-dir; write the conversion elsewhere")
    parent = save_dir.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise NpuboxError(f"--save-dir {save_dir}: cannot create its parent directory {parent} ({e.strerror})") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise NpuboxError(f"--save-dir {save_dir}: directory {parent} is not writable")


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    recipe = load_recipe(args.model)
    ws = Workspace.from_env()
    defaults = recipe.defaults("convert")
    tp, pp = args.tp or defaults.tp, args.pp or defaults.pp
    layer_list = parse_layer_list(args.num_layer_list)
    if args.src == "mcore" and args.load_dir is None:
        raise NpuboxError("--from mcore needs --load-dir (a directory holding latest_checkpointed_iteration.txt)")
    if args.src == "hf" and args.dst == "hf":
        raise NpuboxError("--from hf --to hf is a copy; choose --to mcore")
    load_dir = args.load_dir or ws.hf_dir(recipe.name)
    if args.dst == "mcore" and args.src == "hf":
        save_dir = args.save_dir or ws.checkpoint_dir(recipe.name, f"hf-tp{tp}-pp{pp}")
    elif args.dst == "mcore":
        save_dir = args.save_dir or load_dir.with_name(f"{load_dir.name}-tp{tp}-pp{pp}")
    else:
        save_dir = args.save_dir or load_dir.with_name(load_dir.name + "-hf")
    if not load_dir.is_dir():
        raise NpuboxError(f"--load-dir {load_dir}: not a directory")

    # Everything that can be wrong is found here, before anything is written.
    from llm import checkpoint

    if args.dst == "mcore":
        check_tp(recipe, tp)
        stages = checkpoint.layers_per_stage(recipe.architecture.num_layers, pp, layer_list)
    check_target(save_dir, load_dir)

    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from llm.convert.hf import HfSource, write_hf
    from llm.convert.mcore import McoreSource, write_mcore

    source = HfSource(load_dir, recipe) if args.src == "hf" else McoreSource(load_dir, recipe)
    source_dtype = source.dtype_name if args.src == "hf" else str(source.dtype).removeprefix("torch.")
    dtype_name = DTYPES[args.dtype] if args.dtype else source_dtype
    dtype = getattr(torch, dtype_name)
    iteration = source.iteration if args.src == "mcore" and isinstance(source.iteration, int) else 1

    start = time.monotonic()
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress, atomic_dir(save_dir) as tmp:
        if args.dst == "mcore":
            write_mcore(source, recipe, tmp, tp, stages, dtype, DTYPE_ARG[dtype_name], iteration, layer_list, progress)
        else:
            tokenizer_dir = args.tokenizer_dir or ws.hf_dir(recipe.name)
            write_hf(source, recipe, tmp, dtype, args.max_shard_size_mb * 2**20, tokenizer_dir, progress)
    what = f"mcore tp{tp} pp{pp}" if args.dst == "mcore" else "HF safetensors"
    print(f"converted {recipe.name} {args.src} -> {what} ({dtype_name}) in {time.monotonic() - start:.1f}s: {save_dir}")
    return 0
