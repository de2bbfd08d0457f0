"""The Megatron on-disk checkpoint format, as Megatron-LM and MindSpeed-LLM write and read it.

    <dir>/latest_checkpointed_iteration.txt          "1"  (or "release")
    <dir>/iter_0000001/mp_rank_00/model_optim_rng.pt           when pp == 1
    <dir>/iter_0000001/mp_rank_00_000/model_optim_rng.pt       when pp > 1  (tp rank, pp rank)

Each rank file is a ``torch.save``'d dict:

    'model'                 this rank's shard of the model's state dict: megatron-core's (local spec, flat keys) or
                            Megatron's legacy model's (nested); llm/convert/layout.py names both
    'checkpoint_version'    3.0
    'iteration'             int
    'args'                  argparse.Namespace (what Megatron's loader reads to know the shape;
                            build it with ``make_args``)
    'optimizer', 'opt_param_scheduler', 'rng_state'   added by pretrain

Reading uses ``torch.load(weights_only=True)``; ``argparse.Namespace`` is allowlisted for the
load (Megatron pickles its args as a Namespace), plus any ``safe_globals`` the caller names.
Writing is atomic per file (temporary name, fsync, rename); write the tracker file last with
``write_latest`` so a loader never sees an iteration whose rank files are not all there.
"""

from __future__ import annotations

import argparse
import re
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from llm.atomic import atomic_path, write_text_atomic
from llm.errors import NpuboxError
from llm.regular_file import open_regular, require_regular

CHECKPOINT_VERSION = 3.0
TRACKER_FILE = "latest_checkpointed_iteration.txt"
MAX_TRACKER_BYTES = 64  # an iteration number or "release", a newline
RANK_FILE = "model_optim_rng.pt"
RANK_DIR_RE = re.compile(r"^mp_rank_(\d{2})(?:_(\d{3}))?$")

Iteration = int | str  # an int, or "release" (Megatron's name for a converted, iteration-less checkpoint)


def iter_dir_name(iteration: Iteration) -> str:
    return "release" if iteration == "release" else f"iter_{int(iteration):07d}"


def rank_dir_name(tp_rank: int, pp_rank: int, pp_size: int) -> str:
    """``mp_rank_TT`` when there is one pipeline stage, else ``mp_rank_TT_PPP`` (Megatron's rule)."""
    return f"mp_rank_{tp_rank:02d}" if pp_size == 1 else f"mp_rank_{tp_rank:02d}_{pp_rank:03d}"


def rank_file(ckpt_dir: Path | str, iteration: Iteration, tp_rank: int, pp_rank: int, pp_size: int) -> Path:
    return Path(ckpt_dir) / iter_dir_name(iteration) / rank_dir_name(tp_rank, pp_rank, pp_size) / RANK_FILE


def read_latest(load_dir: Path | str) -> Iteration:
    """The iteration named by ``latest_checkpointed_iteration.txt``: an int, or "release"."""
    path = Path(load_dir) / TRACKER_FILE
    with open_regular(path, f"a Megatron checkpoint directory holding {TRACKER_FILE}", "rb") as f:
        raw = f.read(MAX_TRACKER_BYTES + 1)
    if len(raw) > MAX_TRACKER_BYTES:
        raise NpuboxError(f"{path}: holds over {MAX_TRACKER_BYTES} bytes; expected an iteration number or 'release'")
    text = raw.decode("utf-8", errors="replace").strip()
    if text == "release":
        return text
    if not text.isdigit():
        raise NpuboxError(f"{path}: holds {text!r}; expected an iteration number or 'release'")
    return int(text)


def write_latest(save_dir: Path | str, iteration: Iteration) -> None:
    """Atomically point ``latest_checkpointed_iteration.txt`` at ``iteration`` (call after every rank is saved)."""
    write_text_atomic(Path(save_dir) / TRACKER_FILE, str(iteration))


def save_rank(
    save_dir: Path | str,
    iteration: Iteration,
    tp_rank: int,
    pp_rank: int,
    pp_size: int,
    state: dict[str, Any],
    *,
    atomic: bool = True,
) -> Path:
    """Write one rank's ``model_optim_rng.pt``; returns its path.

    ``atomic=True`` (default): temporary name, fsync, rename. ``atomic=False`` writes in place
    without fsync, for a ``save_dir`` that is itself a temporary directory made durable and
    renamed as a whole (``llm.atomic.atomic_dir``), so the disk can flush while the next rank is built."""
    import torch

    final = rank_file(save_dir, iteration, tp_rank, pp_rank, pp_size)
    if not atomic:
        final.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, final)
        return final
    with atomic_path(final) as tmp:
        torch.save(state, tmp)
    return final


def require_whole_torch_file(path: Path) -> None:
    """Refuse a file that is not a whole ``torch.save`` zip (a cut copy, an interrupted write): torch's own error for
    one blames mmap, the zip serialization it was saved with, or says "Invalid argument"."""
    if not zipfile.is_zipfile(path):
        raise NpuboxError(
            f"{path}: {path.stat().st_size:,} bytes, not a whole torch.save file (no zip directory at its end): it is "
            "truncated or not a checkpoint; save or copy it again"
        )


def load_rank(
    load_dir: Path | str,
    iteration: Iteration,
    tp_rank: int,
    pp_rank: int,
    pp_size: int,
    *,
    safe_globals: Iterable[Any] | None = None,
    map_location: Any = "cpu",
) -> dict[str, Any]:
    """Read one rank's file with ``torch.load(weights_only=True)``.

    ``argparse.Namespace`` is always allowed, and the Megatron / MindSpeed classes that a file's pickle names load as
    placeholders (``llm.compat.opaque_globals``, found by scanning the file); a caller reading every rank of one
    checkpoint passes that list in ``safe_globals`` once instead."""
    from llm.compat import load_weights_only, opaque_globals

    path = rank_file(load_dir, iteration, tp_rank, pp_rank, pp_size)
    require_regular(path, f"the rank file of tp rank {tp_rank}, pp rank {pp_rank} of {pp_size}")
    require_whole_torch_file(path)
    try:
        allowed = opaque_globals(path) if safe_globals is None else safe_globals
        state = load_weights_only(path, [argparse.Namespace, *allowed], map_location=map_location)
    except Exception as e:  # torch raises UnpicklingError / RuntimeError with long messages
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise NpuboxError(f"{path}: cannot be loaded with torch.load(weights_only=True): {first}") from None
    if not isinstance(state, dict) or "model" not in state:
        raise NpuboxError(f"{path}: expected a dict with a 'model' state dict, got {type(state).__name__}")
    return state


def find_layout(load_dir: Path | str, iteration: Iteration) -> tuple[int, int]:
    """(tp, pp) of a checkpoint, from its rank directories; checks that every rank is there."""
    it_dir = Path(load_dir) / iter_dir_name(iteration)
    if not it_dir.is_dir():
        raise NpuboxError(f"{it_dir}: not found; {Path(load_dir) / TRACKER_FILE} names iteration {iteration}")
    ranks = set()
    for child in it_dir.iterdir():
        m = RANK_DIR_RE.match(child.name)
        if m and ((child / RANK_FILE).exists() or (child / RANK_FILE).is_symlink()):
            require_regular(child / RANK_FILE, "a rank file written by torch.save")  # a FIFO is not "missing"
            ranks.add((int(m.group(1)), int(m.group(2)) if m.group(2) is not None else None))
    if not ranks:
        raise NpuboxError(f"{it_dir}: holds no mp_rank_*/{RANK_FILE}; expected a Megatron checkpoint")
    tp = max(t for t, _ in ranks) + 1
    pp_ranks = {p for _, p in ranks}
    if pp_ranks == {None}:
        pp = 1
        expected = {(t, None) for t in range(tp)}
    elif None in pp_ranks:
        raise NpuboxError(f"{it_dir}: mixes mp_rank_TT and mp_rank_TT_PPP directories; expected one layout")
    else:
        pp = max(pp_ranks) + 1
        expected = {(t, p) for t in range(tp) for p in range(pp)}
    missing = sorted(expected - ranks)
    if missing:
        names = ", ".join(rank_dir_name(t, p or 0, pp) for t, p in missing)
        raise NpuboxError(f"{it_dir}: rank files missing for {names} (checkpoint has tp={tp}, pp={pp})")
    return tp, pp


def make_args(
    recipe,
    *,
    tp: int,
    pp: int,
    params_dtype: str = "fp32",
    num_layer_list: list[int] | None = None,
    iteration: int = 1,
    **extra: Any,
) -> argparse.Namespace:
    """The ``args`` Megatron's ``load_args_from_checkpoint`` reads to know the model's shape.

    Attribute names are Megatron-LM's own (``--num-layers`` → ``num_layers``); ``npubox_model``
    names the recipe. Only plain ints, floats, strings, bools, lists and None: loadable with
    ``weights_only=True``."""
    a = recipe.architecture
    args = argparse.Namespace(
        npubox_model=recipe.name,
        npubox_family=recipe.family,
        num_layers=a.num_layers,
        hidden_size=a.hidden_size,
        ffn_hidden_size=a.ffn_hidden_size,
        num_attention_heads=a.num_attention_heads,
        group_query_attention=a.num_query_groups != a.num_attention_heads,
        num_query_groups=a.num_query_groups,
        kv_channels=a.head_dim,
        vocab_size=a.vocab_size,
        make_vocab_size_divisible_by=a.make_vocab_size_divisible_by,
        padded_vocab_size=a.padded_vocab_size(tp),
        max_position_embeddings=a.max_position_embeddings,
        position_embedding_type="rope",
        rotary_base=a.rotary_base,
        normalization="RMSNorm",
        norm_epsilon=a.norm_epsilon,
        swiglu=True,
        disable_bias_linear=True,
        add_bias_linear=False,
        add_qkv_bias=a.add_qkv_bias,
        untie_embeddings_and_output_weights=not a.tie_embeddings,
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        num_layer_list=",".join(map(str, num_layer_list)) if num_layer_list else None,
        params_dtype=params_dtype,
        bf16=params_dtype == "bf16",
        fp16=params_dtype == "fp16",
        iteration=iteration,
        consumed_train_samples=0,
        consumed_valid_samples=0,
    )
    for key, value in extra.items():
        setattr(args, key, value)
    return args


SHAPE_ARGS = ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "num_query_groups")


def check_args_fit(where: Path | str, args: argparse.Namespace | None, recipe) -> None:
    """Refuse a checkpoint whose saved ``args`` give the model another shape than ``recipe``: one sentence naming the
    first field that differs, before any tensor is read (convert and eval both ask). No ``args``: nothing to check."""
    if args is None:
        return
    a = recipe.architecture
    for name in SHAPE_ARGS:
        want = getattr(a, name)
        have = getattr(args, name, want)
        if name == "num_query_groups" and not getattr(args, "group_query_attention", True):
            have = getattr(args, "num_attention_heads", want)  # Megatron leaves num_query_groups unset without GQA
        if have != want:
            raise NpuboxError(f"{where}: checkpoint args {name}={have}, recipe {recipe.name} has {want}")


def layers_per_stage(num_layers: int, pp: int, num_layer_list: list[int] | None = None) -> list[int]:
    """How many transformer layers each pipeline stage holds: even split, or ``num_layer_list``."""
    if num_layer_list:
        if len(num_layer_list) != pp or sum(num_layer_list) != num_layers or min(num_layer_list) <= 0:
            raise NpuboxError(
                f"--num-layer-list {','.join(map(str, num_layer_list))}: expected {pp} positive numbers "
                f"(one per pipeline stage) summing to num_layers={num_layers}"
            )
        return list(num_layer_list)
    if num_layers % pp:
        raise NpuboxError(
            f"pipeline parallel size {pp} does not divide num_layers={num_layers}; "
            f"choose a divisor or give --num-layer-list"
        )
    return [num_layers // pp] * pp
