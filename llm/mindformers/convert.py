"""`python -m llm convert --to mindspore` / `--from mindspore` on a MindFormers stack: the release's own converters.

HF → MindSpore: the guide's ``python convert_weight.py --model qwen2|qwen2_5 --input_path HF --output_path CKPT
--dtype D`` (from the source root), into ``checkpoints/<model>/mindspore/<model>.ckpt``, the file the mindformers
engine loads. MindSpore → HF: MindFormers' own reverse converter for its Llama-layout models
(:data:`~llm.mindformers.guides.REVERSE_CONVERTER`), from a checkpoint file or the newest rank-0 checkpoint of a
trainer's ``output_dir``; npubox keeps the model's tensors of what it writes (a trained checkpoint also holds the
optimizer's moments and step), checks every one against the recipe's shapes, and writes an HF folder: safetensors,
config.json and the tokenizer files. Each target is written beside its final place and swapped in when complete."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from llm.atomic import atomic_dir
from llm.errors import NpuboxError
from llm.mindformers.guides import REVERSE_CONVERTER
from llm.mindformers.stack import Stack, resolve_stack, run_script
from llm.recipes import Recipe
from llm.workspace import Workspace

REVERSE_CALL = (
    "import sys, torch; from {module} import convert_ms_to_pt; "
    "convert_ms_to_pt(sys.argv[1], sys.argv[2], dtype=getattr(torch, sys.argv[3]))"
)


def newest_checkpoint(path: Path) -> Path:
    """``path`` if it is a ``.ckpt`` file, else the newest rank-0 checkpoint under a trainer's output_dir."""
    if path.is_file():
        if path.suffix != ".ckpt":
            raise NpuboxError(f"--load-dir {path}: expected a MindSpore .ckpt file or a trainer's output_dir")
        return path
    found = sorted(
        (*path.glob("checkpoint/rank_0/*.ckpt"), *path.glob("rank_0/*.ckpt"), *path.glob("*.ckpt")),
        key=lambda p: p.stat().st_mtime,
    )
    if not found:
        raise NpuboxError(
            f"--load-dir {path}: no MindSpore checkpoint there (looked for *.ckpt, rank_0/*.ckpt and "
            "checkpoint/rank_0/*.ckpt)"
        )
    return found[-1]


def hf_to_mindspore(stack: Stack, recipe: Recipe, load_dir: Path, save_dir: Path, dtype: str) -> Path:
    if not (load_dir / "config.json").is_file():
        raise NpuboxError(f"--load-dir {load_dir}: no config.json; expected a Hugging Face model folder")
    with atomic_dir(save_dir) as tmp:
        out = tmp / f"{recipe.name}.ckpt"
        argv = [a.format(hf=load_dir, ckpt=out, dtype=dtype) for a in stack.guide.convert_argv]
        run_script(stack, argv, "converting HF to MindSpore")
        if not out.is_file():
            raise NpuboxError(f"convert_weight.py finished but wrote no {out.name}; its output is above")
    return save_dir / f"{recipe.name}.ckpt"


def mindspore_to_hf(stack: Stack, recipe: Recipe, ckpt: Path, save_dir: Path, tokenizer_dir: Path, dtype: str) -> None:
    import torch

    from llm.convert.keymap import hf_shape, hf_tensors

    expected = {key: hf_shape(recipe, parts) for key, parts in hf_tensors(recipe)}
    torch_dtype = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[dtype]
    with atomic_dir(save_dir) as tmp:
        reversed_file = tmp / "reversed.pt"
        call = REVERSE_CALL.format(module=REVERSE_CONVERTER)
        run_script(stack, ["-c", call, str(ckpt), str(reversed_file), torch_dtype], "converting MindSpore to HF")
        state = torch.load(reversed_file, map_location="cpu", weights_only=True)
        reversed_file.unlink()
        write_hf_folder(recipe, state, expected, tmp, tokenizer_dir, ckpt, torch_dtype)


def write_hf_folder(recipe, state: dict, expected: dict, out: Path, tokenizer_dir: Path, ckpt: Path, dtype: str):
    """The model's tensors of ``state`` (the reverse converter's names) as an HF folder in ``out``."""
    import json
    import shutil

    from safetensors.torch import save_file

    from llm.convert.hf import tokenizer_files
    from llm.recipes.hfconfig import hf_config

    missing = [k for k in expected if k not in state]
    if missing:
        raise NpuboxError(
            f"{ckpt}: no {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''} after MindFormers' reverse "
            f"conversion; expected a {recipe.name} checkpoint (MindFormers' Llama layout)"
        )
    for key, shape in expected.items():
        if tuple(state[key].shape) != tuple(shape):
            raise NpuboxError(
                f"{ckpt}: tensor {key!r} has shape {list(state[key].shape)}, recipe {recipe.name} expects {list(shape)}"
            )
    tensors = {key: state[key].contiguous() for key in expected}
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    config = json.dumps(hf_config(recipe, dtype), indent=2) + "\n"
    (out / "config.json").write_text(config, encoding="utf-8")
    for path in tokenizer_files(tokenizer_dir):
        shutil.copy2(path, out / path.name)


def default_paths(args: argparse.Namespace, recipe: Recipe, ws: Workspace) -> tuple[Path, Path]:
    """(source, target) of ``llm convert`` with ``--from mindspore`` or ``--to mindspore``."""
    if args.dst == "mindspore":
        if args.src != "hf":
            raise NpuboxError(f"--from {args.src} --to mindspore: MindFormers' converter reads Hugging Face weights")
        return args.load_dir or ws.hf_dir(recipe.name), args.save_dir or ws.checkpoint_dir(recipe.name, "mindspore")
    if args.dst != "hf":
        raise NpuboxError(f"--from mindspore --to {args.dst}: MindFormers' reverse converter writes HF weights")
    if args.load_dir is None:
        raise NpuboxError("--from mindspore needs --load-dir (a .ckpt file or a trainer's output_dir)")
    return args.load_dir, args.save_dir or ws.models / recipe.name / "pretrained-hf"


def write(args: argparse.Namespace, recipe: Recipe, ws: Workspace, load: Path, save: Path) -> int:
    """Convert with the stack's tools into ``save`` (held under its lock by the caller)."""
    stack = resolve_stack(args)
    dtype = args.dtype or ("fp32" if recipe.training.precision == "fp32" else "bf16")
    fixed = stack.guide.convert_dtype
    if args.dst == "mindspore" and fixed and fixed != dtype:
        if args.dtype:
            raise NpuboxError(
                f"--dtype {args.dtype}: MindFormers {stack.guide.release}'s converter ({stack.guide.convert_argv[0]}) "
                f"writes {fixed} only"
            )
        print(f"MindFormers {stack.guide.release}'s converter writes {fixed}", file=sys.stderr)
        dtype = fixed
    start = time.monotonic()
    if args.dst == "mindspore":
        written = hf_to_mindspore(stack, recipe, load, save, dtype)
    else:
        ckpt = newest_checkpoint(load)
        print(f"reading {ckpt}", file=sys.stderr)
        mindspore_to_hf(stack, recipe, ckpt, save, args.tokenizer_dir or ws.hf_dir(recipe.name), dtype)
        written = save
    print(f"converted {recipe.name} {args.src} -> {args.dst} ({dtype}) in {time.monotonic() - start:.1f}s: {written}")
    return 0
