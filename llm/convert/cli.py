"""`python -m llm convert`: HF safetensors ⇄ Megatron checkpoints (megatron-core or legacy layout), and Megatron →
Megatron resharding (and relayout)."""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import sys
import time
from pathlib import Path

from llm.atomic import atomic_dir, remove_leftovers
from llm.checkpoint import TRACKER_FILE
from llm.errors import NpuboxError
from llm.recipes import load_recipe
from llm.target_lock import lock_target
from llm.workspace import Workspace

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
DTYPE_ARG = {v: k for k, v in DTYPES.items()}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m llm convert",
        description="Convert a model between Hugging Face safetensors and Megatron checkpoints "
        "(iter_0000001/mp_rank_TT[_PPP]/model_optim_rng.pt; megatron-core local-spec keys, or with --format legacy "
        "Megatron's legacy model) with any TP/PP split, or reshard a Megatron checkpoint to another TP/PP. Streams "
        "rank by rank; the target directory is replaced atomically.",
        epilog="With only --model M: reads <workspace>/models/M/hf and writes "
        "<workspace>/checkpoints/M/hf-tp{T}-pp{P} with the recipe's convert TP/PP.",
    )
    p.add_argument("--model", required=True, help="recipe name (python -m llm recipe list)")
    p.add_argument(
        "--from",
        dest="src",
        choices=("hf", "mcore", "mindspore"),
        default="hf",
        help="source format (default: hf; mcore: a Megatron checkpoint of either layout; mindspore: a MindFormers "
        "checkpoint, a .ckpt file or a trainer's output_dir, read with the stack's own reverse converter)",
    )
    p.add_argument(
        "--to",
        dest="dst",
        choices=("mcore", "hf", "mindspore"),
        help="target format (default: mindspore on a MindFormers image, with the stack's own convert_weight.py, "
        "into checkpoints/M/mindspore/M.ckpt; else mcore)",
    )
    p.add_argument(
        "--format",
        dest="layout",
        choices=("mcore", "legacy"),
        default="mcore",
        help="--to mcore: the Megatron model the checkpoint is for: mcore (megatron-core's GPTModel, local spec; what "
        "--use-mcore-models trains, default) or legacy (Megatron's legacy GPTModel, megatron/model, which ModelLink "
        "1.0's scripts train). A Megatron source's layout is found from its keys",
    )
    p.add_argument("--load-dir", type=Path, help="source directory (default for --from hf: <workspace>/models/M/hf)")
    p.add_argument(
        "--save-dir",
        type=Path,
        help="target directory, replaced whole on success (default: "
        "<workspace>/checkpoints/M/hf-tp{T}-pp{P} from hf, <load-dir>-tp{T}-pp{P} from mcore, "
        "<load-dir>-hf for --to hf)",
    )
    p.add_argument("--tp", type=int, help="target tensor-parallel size (default: the recipe's convert TP)")
    p.add_argument("--pp", type=int, help="target pipeline-parallel size (default: the recipe's convert PP)")
    p.add_argument("--num-layer-list", help="layers per pipeline stage, comma separated (e.g. 6,8,8,6); default: even")
    p.add_argument("--dtype", choices=tuple(DTYPES), help="target dtype (default: the source's)")
    p.add_argument(
        "--tokenizer-dir",
        type=Path,
        help="--to hf: copy tokenizer files from here (default: <workspace>/models/M/hf when it exists)",
    )
    p.add_argument(
        "--max-shard-size-mb", type=int, default=2048, help="--to hf: largest safetensors shard (default 2048)"
    )
    p.add_argument("--stack", help="--to/--from mindspore: MindFormers source commit (default: the image's spec)")
    p.add_argument("--source-dir", type=Path, help="--to/--from mindspore: MindFormers source tree (default: image's)")
    p.add_argument("--device-target", choices=("Ascend", "CPU"), help=argparse.SUPPRESS)
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a checkpoint of the same kind already in --save-dir (the new one is written beside it "
        "and swapped in only when complete); without it an existing checkpoint is left alone",
    )
    return p


def parse_layer_list(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise NpuboxError(f"--num-layer-list {text!r}: expected comma-separated integers such as 6,8,8,6") from None


KINDS = {
    "hf": "Hugging Face checkpoint (config.json and *.safetensors)",
    "mcore": "Megatron checkpoint (latest_checkpointed_iteration.txt)",
    "mindspore": "MindSpore checkpoint folder (*.ckpt)",
}


def checkpoint_kind(path: Path) -> str | None:
    if (path / TRACKER_FILE).is_file():
        return "mcore"
    entries = list(path.iterdir())
    if entries and all(p.suffix == ".ckpt" and p.is_file() for p in entries):
        return "mindspore"
    weights = any(path.glob("*.safetensors")) or (path / "model.safetensors.index.json").is_file()
    if (path / "config.json").is_file() and weights:
        return "hf"
    return None


def trained_iteration(path: Path) -> int | None:
    """The iteration of a pretrain checkpoint (optimizer state inside), None for weights only."""
    from llm import checkpoint

    try:
        iteration = checkpoint.read_latest(path)
        tp, pp = checkpoint.find_layout(path, iteration)
        state = checkpoint.load_rank(path, iteration, 0, 0, pp)
    except NpuboxError:
        return None
    return int(state.get("iteration", 0)) if "optimizer" in state else None


def check_target(save_dir: Path, load_dir: Path) -> None:
    """Refuse a --save-dir that is or contains the source, or whose folder cannot be written; make that folder."""
    save, load = save_dir.resolve(), load_dir.resolve()
    if save == load or save in load.parents:
        raise NpuboxError(
            f"--save-dir {save_dir} {'is' if save == load else 'contains'} the --load-dir {load_dir}: replacing it "
            "would delete the model being converted; choose another --save-dir"
        )
    if save.exists() and not save.is_dir():
        raise NpuboxError(f"--save-dir {save_dir} is a file; expected a folder to write the checkpoint into")
    parent = save.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise NpuboxError(
            f"--save-dir {save_dir}: cannot create its parent directory {parent} ({e.strerror})"
        ) from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise NpuboxError(f"--save-dir {save_dir}: directory {parent} is not writable")


def check_existing(save_dir: Path, dst: str, overwrite: bool) -> None:
    """Refuse a --save-dir whose replacement would lose something: unrelated files, or an existing checkpoint
    (unless --overwrite)."""
    save = save_dir.resolve()
    if save.is_dir():
        entries = sorted(p.name for p in save.iterdir())
        kind = checkpoint_kind(save)
        if entries and kind != dst:
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise NpuboxError(
                f"--save-dir {save_dir} holds other files ({shown}), not a {KINDS[dst]}; convert replaces only a "
                "checkpoint of the kind it writes: choose a new or empty --save-dir"
            )
        if entries:
            trained = trained_iteration(save) if kind == "mcore" else None
            what = f"a {KINDS[dst]}"
            if trained is not None:
                what = f"a trained checkpoint (iteration {trained}, with optimizer state)"
            if not overwrite:
                lost = ", which replacing it would lose" if trained is not None else ""
                raise NpuboxError(
                    f"--save-dir {save_dir} already holds {what}{lost}; pass --overwrite to replace it, "
                    "or choose another --save-dir"
                )
            print(f"--overwrite: {save_dir} holds {what}; it is replaced once the new one is complete", file=sys.stderr)


def raise_if_disk_full(error: Exception, save_dir: Path, load_dir: Path) -> None:
    """Turn a write that failed for want of space (atomic_dir has removed the partial copy) into one sentence.
    torch.save reports a full disk as a RuntimeError of its zip writer and safetensors as its own error, so the
    free space decides too."""
    if isinstance(error, NpuboxError):
        return
    full = getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(error)
    parent = save_dir.resolve().parent
    needed = sum(f.stat().st_size for f in load_dir.rglob("*") if f.is_file())
    free = shutil.disk_usage(parent).free
    if full or (isinstance(error, (OSError, RuntimeError)) and free < needed):
        raise NpuboxError(
            f"no space left on {parent} while writing {save_dir} ({free / 2**30:.1f} GiB free, the source is "
            f"{needed / 2**30:.1f} GiB): free some space or choose another --save-dir; the partial copy was removed"
        ) from None


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    recipe = load_recipe(args.model)
    ws = Workspace.from_env()
    if args.dst is None:
        from llm.runtime_report import baked_engine

        args.dst = "mindspore" if baked_engine() == "mindformers" and args.src == "hf" else "mcore"
    if "mindspore" in (args.src, args.dst):
        return convert_with_mindformers(args, recipe, ws)
    defaults = recipe.defaults("convert")
    tp = args.tp if args.tp is not None else defaults.tp
    pp = args.pp if args.pp is not None else defaults.pp
    for flag, value in (("--tp", tp), ("--pp", pp)):
        if value < 1:
            raise NpuboxError(f"{flag} {value}: expected 1 or more")
    layer_list = parse_layer_list(args.num_layer_list)
    if args.src == "mcore" and args.load_dir is None:
        raise NpuboxError("--from mcore needs --load-dir (a directory holding latest_checkpointed_iteration.txt)")
    if args.src == "hf" and args.dst == "hf":
        raise NpuboxError("--from hf --to hf is a copy; choose --to mcore")
    if args.dst == "hf" and args.layout != "mcore":
        raise NpuboxError(
            f"--format {args.layout} names the layout of a Megatron checkpoint to write; --to hf writes "
            "Hugging Face safetensors (a Megatron source's layout is found from its keys)"
        )
    load_dir = args.load_dir or ws.hf_dir(recipe.name)
    if args.dst == "mcore" and args.src == "hf":
        save_dir = args.save_dir or ws.converted_dir(recipe.name, tp, pp)
    elif args.dst == "mcore":
        save_dir = args.save_dir or load_dir.with_name(f"{load_dir.name}-tp{tp}-pp{pp}")
    else:
        save_dir = args.save_dir or load_dir.with_name(load_dir.name + "-hf")
    if not load_dir.is_dir():
        raise NpuboxError(f"--load-dir {load_dir}: not a directory")

    # Everything that can be wrong is found here, before anything is written.
    from llm import checkpoint

    stages = None
    if args.dst == "mcore":
        recipe.check_tp(tp)
        stages = checkpoint.layers_per_stage(recipe.architecture.num_layers, pp, layer_list)
    check_target(save_dir, load_dir)
    with lock_target(save_dir, f"--save-dir {save_dir}"):  # what is there cannot change while we look and write
        check_existing(save_dir, args.dst, args.overwrite)
        remove_leftovers(save_dir, "convert")
        try:
            return write(args, recipe, ws, load_dir, save_dir, tp, pp, stages, layer_list)
        except Exception as e:
            raise_if_disk_full(e, save_dir, load_dir)
            raise


def convert_with_mindformers(args, recipe, ws: Workspace) -> int:
    """HF ⇄ MindSpore with the stack's own converters (llm.mindformers.convert), under the same target rules."""
    from llm.mindformers import convert

    load_dir, save_dir = convert.default_paths(args, recipe, ws)
    if not load_dir.exists():
        raise NpuboxError(f"--load-dir {load_dir}: not found")
    check_target(save_dir, load_dir)
    with lock_target(save_dir, f"--save-dir {save_dir}"):
        check_existing(save_dir, args.dst, args.overwrite)
        remove_leftovers(save_dir, "convert")
        return convert.write(args, recipe, ws, load_dir, save_dir)


def write(
    args,
    recipe,
    ws: Workspace,
    load_dir: Path,
    save_dir: Path,
    tp: int,
    pp: int,
    stages: list[int] | None,
    layer_list: list[int] | None,
) -> int:
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from llm.convert.hf import HfSource, write_hf
    from llm.convert.layout import LAYOUTS
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
            dtype_arg, layout = DTYPE_ARG[dtype_name], LAYOUTS[args.layout]
            write_mcore(source, recipe, tmp, tp, stages, dtype, dtype_arg, iteration, layer_list, progress, layout)
        else:
            tokenizer_dir = args.tokenizer_dir or ws.hf_dir(recipe.name)
            write_hf(source, recipe, tmp, dtype, args.max_shard_size_mb * 2**20, tokenizer_dir, progress)
    what = f"{args.layout} tp{tp} pp{pp}" if args.dst == "mcore" else "HF safetensors"
    print(f"converted {recipe.name} {args.src} -> {what} ({dtype_name}) in {time.monotonic() - start:.1f}s: {save_dir}")
    return 0
