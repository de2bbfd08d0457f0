"""Megatron checkpoints (megatron-core local spec, or Megatron's legacy model) written and read one TP × PP rank at
a time, both directions walking layout.py's table.

Writing builds one rank's state dict from canonical tensors (reading only that rank's rows / columns of each) and
saves it before the next rank starts. Reading finds the layout from the keys, maps the rank files of one pipeline
stage with ``torch.load(mmap=True, weights_only=True)`` and copies the rows / columns asked for from each TP rank's
block of a tensor straight into the result (no merged copy).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm import checkpoint
from llm.compat import opaque_globals
from llm.convert.keymap import canonical_names, canonical_shape, layer_tensor_names
from llm.convert.layout import (
    MCORE,
    PACK,
    TENSORS,
    UNPACK,
    Layout,
    MegatronTensor,
    Piece,
    detect_layout,
    lookup,
    nest,
    stage_tensors,
    tensor_of,
    tp_share,
)
from llm.errors import NpuboxError

if TYPE_CHECKING:
    import torch


def stage_layers(layers_per_stage: list[int], stage: int) -> range:
    start = sum(layers_per_stage[:stage])
    return range(start, start + layers_per_stage[stage])


def rank_model_state(
    source,
    recipe,
    tp: int,
    tp_rank: int,
    layers: range,
    first: bool,
    last: bool,
    dtype: torch.dtype,
    layout: Layout = MCORE,
    on_layer=lambda: None,
) -> dict[str, Any]:
    """The ``'model'`` state dict of TP rank ``tp_rank`` holding global ``layers`` (keys numbered locally), in
    ``layout``. Each byte is copied once, from the source straight into its place in the rank's tensors."""
    import torch

    a = recipe.architecture

    def read(name: str, rows: slice | None = None, cols: slice | None = None, out=None):
        return source.get(name, rows=rows, cols=cols, out=out, dtype=dtype)

    def vocab_matrix(name: str):  # this rank's rows of the padded matrix; padding rows are zeros
        rows = tp_share(a, name, tp, tp_rank)
        out = torch.empty((rows.stop - rows.start, a.hidden_size), dtype=dtype)
        real = max(0, min(rows.stop, a.vocab_size) - rows.start)
        if real > 0:
            read(name, rows=slice(rows.start, rows.start + real), out=out[:real])
        out[real:].zero_()
        return out

    def tensor(t: MegatronTensor, c: str):  # c: the canonical names' prefix ("layers.N." or "")
        if not t.parts:
            return None  # megatron-core's own state_dict() holds None for a local-spec linear's _extra_state
        if t.packing:
            tail = canonical_shape(recipe, c + t.parts[0])[1:]
            return PACK[t.packing](
                lambda part, rows, into: read(c + part, rows=rows, out=into), t.parts, a, tp, tp_rank, tail, dtype
            )
        (part,) = t.parts
        if t.split == "vocab":
            return vocab_matrix(c + part)
        if t.split == "columns":
            return read(c + part, cols=tp_share(a, part, tp, tp_rank))
        return read(c + part)  # replicated

    flat: dict[str, Any] = {}

    def add(tensors: list[MegatronTensor], key_prefix: str, c: str, present: set[str]) -> None:
        for t in tensors:
            key = t.key(layout)
            if key is not None and set(t.parts) <= present:
                flat[key_prefix + key] = tensor(t, c)

    names, layer_names = set(canonical_names(recipe)), set(layer_tensor_names(recipe))
    if first:
        add(stage_tensors("first"), "", "", names)
    for local, i in enumerate(layers):
        add(stage_tensors("layer"), layout.layer_prefix.format(local), f"layers.{i}.", layer_names)
        on_layer()
    if last:  # tied, pp > 1: the last stage keeps its own copy of the embedding for the output layer
        tied_head = a.tie_embeddings and not first
        add([t for t in TENSORS if t.stage == "last" or (t.stage == "tied head" and tied_head)], "", "", names)
    return nest({k: (v.clone() if v is not None and _is_view(v) else v) for k, v in flat.items()})


def _is_view(t: torch.Tensor) -> bool:
    # torch.save writes a view's whole storage: keep only what the rank needs.
    return t.untyped_storage().nbytes() != t.numel() * t.element_size()


def write_mcore(
    source,
    recipe,
    out_dir: Path,
    tp: int,
    layers_per_stage: list[int],
    dtype: torch.dtype,
    dtype_name: str,
    iteration: int,
    num_layer_list: list[int] | None,
    progress,
    layout: Layout = MCORE,
) -> None:
    pp = len(layers_per_stage)
    args = checkpoint.make_args(
        recipe, tp=tp, pp=pp, params_dtype=dtype_name, num_layer_list=num_layer_list, iteration=iteration, **layout.args
    )
    for stage in range(pp):
        layers = stage_layers(layers_per_stage, stage)
        for tp_rank in range(tp):
            name = checkpoint.rank_dir_name(tp_rank, stage, pp)
            task = progress.add_task(f"{name} layers {layers.start}-{layers.stop - 1}", total=len(layers) + 1)
            first, last = stage == 0, stage == pp - 1
            advance = lambda task=task: progress.advance(task)  # noqa: E731
            model = rank_model_state(source, recipe, tp, tp_rank, layers, first, last, dtype, layout, advance)
            version = checkpoint.CHECKPOINT_VERSION
            state = {"model": model, "checkpoint_version": version, "iteration": iteration, "args": args}
            checkpoint.save_rank(out_dir, iteration, tp_rank, stage, pp, state, atomic=False)  # out_dir: atomic_dir
            del model, state
            progress.advance(task)
    checkpoint.write_latest(out_dir, iteration)


def checkpoint_layout(load_dir: Path | str) -> Layout | None:
    """The layout of the Megatron checkpoint in ``load_dir``, from its first rank file's keys (None: not a whole
    checkpoint, or neither layout)."""
    try:
        iteration = checkpoint.read_latest(load_dir)
        _tp, pp = checkpoint.find_layout(load_dir, iteration)
        state = checkpoint.load_rank(load_dir, iteration, 0, 0, pp)
    except NpuboxError:
        return None
    return detect_layout(state["model"])


class McoreSource:
    """Canonical tensors of a Megatron checkpoint (either layout, found from its keys), read piece by piece from the
    TP ranks' files.

    Rank files are mapped (``torch.load(mmap=True)``), never loaded whole; each request copies only the rows and
    columns asked for, straight from each rank's block into the result. Mapped pages that were read stay resident
    while their file is mapped, so the files of a stage are dropped and mapped again after every ``REMAP_BYTES``
    read: memory stays near one tensor whatever the checkpoint's size."""

    REMAP_BYTES = 256 * 2**20

    def __init__(self, load_dir: Path, recipe):
        self.dir, self.recipe = Path(load_dir), recipe
        self.iteration = checkpoint.read_latest(self.dir)
        self.tp, self.pp = checkpoint.find_layout(self.dir, self.iteration)
        first_file = checkpoint.rank_file(self.dir, self.iteration, 0, 0, self.pp)
        self._globals = opaque_globals(first_file)
        first = checkpoint.load_rank(self.dir, self.iteration, 0, 0, self.pp, safe_globals=self._globals)
        args = first.get("args")
        a = recipe.architecture
        checkpoint.check_args_fit(self.dir, args, recipe)
        lst = getattr(args, "num_layer_list", None)
        lst = [int(x) for x in str(lst).split(",")] if lst else None
        self.layers_per_stage = checkpoint.layers_per_stage(a.num_layers, self.pp, lst)
        layout = detect_layout(first["model"])
        if layout is None:
            raise NpuboxError(
                f"{first_file}: its 'model' holds neither a megatron-core model (decoder.layers...) nor "
                "Megatron's legacy one (language_model...)"
            )
        self.layout = layout
        emb_key = tensor_of("embed").key(layout)
        try:
            emb = lookup(first["model"], emb_key)
        except KeyError:
            raise NpuboxError(f"{first_file}: no {emb_key}") from None
        self.padded_vocab = emb.shape[0] * self.tp
        self.dtype = emb.dtype
        del first, emb
        self._stage_no, self._stage, self._read = None, None, 0

    def stage_of(self, layer: int) -> tuple[int, int]:
        for stage in range(self.pp):
            r = stage_layers(self.layers_per_stage, stage)
            if layer in r:
                return stage, layer - r.start
        raise IndexError(layer)

    def _ranks(self, stage: int) -> list[dict[str, Any]]:
        if self._stage_no != stage or self._read >= self.REMAP_BYTES:
            self._stage = None  # unmap the files (and their resident pages) first
            load = checkpoint.load_rank
            self._stage = [
                load(self.dir, self.iteration, t, stage, self.pp, safe_globals=self._globals)["model"]
                for t in range(self.tp)
            ]
            self._stage_no, self._read = stage, 0
        return self._stage

    def _tensor(self, stage: int, key: str) -> list[torch.Tensor]:
        ranks = self._ranks(stage)
        try:
            return [lookup(r, key) for r in ranks]
        except KeyError:
            path = checkpoint.rank_file(self.dir, self.iteration, 0, stage, self.pp)
            raise NpuboxError(
                f"{path.parent.parent}: tensor {key!r} missing in a rank of pipeline stage {stage}"
            ) from None

    def _pieces(self, name: str) -> list[Piece]:
        """The blocks of canonical ``name`` in the rank files, where layout.py's table says they are."""
        a = self.recipe.architecture
        if name.startswith("layers."):
            _, layer, part = name.split(".")
            stage, local = self.stage_of(int(layer))
            t = tensor_of(part)
            key = self.layout.layer_prefix.format(local) + t.key(self.layout)
        else:
            part, t = name, tensor_of(name)
            stage, key = (0 if t.stage == "first" else self.pp - 1), t.key(self.layout)
        shards = self._tensor(stage, key)
        if t.packing:
            return [p for r, s in enumerate(shards) for p in UNPACK[t.packing](s, t.parts, a, self.tp, r)[part]]
        if t.split == "vocab":  # padding rows dropped
            rows = shards[0].shape[0]
            return [
                Piece(r * rows, 0, s[: max(0, min(rows, a.vocab_size - r * rows))])
                for r, s in enumerate(shards)
                if r * rows < a.vocab_size
            ]
        if t.split == "columns":
            return [Piece(0, r * s.shape[1], s) for r, s in enumerate(shards)]
        return [Piece(0, 0, shards[0])]  # replicated: TP rank 0's

    def get(
        self,
        name: str,
        rows: slice | None = None,
        cols: slice | None = None,
        out: torch.Tensor | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Like HfSource.get: rows / columns of canonical ``name``, into ``out`` (same number of elements, any
        shape) or a new tensor of ``dtype`` (default: as stored)."""
        import torch

        shape = canonical_shape(self.recipe, name)
        pieces = self._pieces(name)
        inside = all(
            p.tensor.dim() == len(shape)
            and p.row0 + p.tensor.shape[0] <= shape[0]
            and (len(shape) == 1 or p.col0 + p.tensor.shape[1] <= shape[1])
            for p in pieces
        )
        if not inside or sum(p.tensor.numel() for p in pieces) != math.prod(shape):
            blocks = ", ".join(str(list(p.tensor.shape)) for p in pieces[:4]) + (" ..." if len(pieces) > 4 else "")
            raise NpuboxError(
                f"{self.dir}: tensor {name} has TP rank blocks {blocks}; "
                f"recipe {self.recipe.name} expects {list(shape)} in all"
            )
        rows = rows or slice(0, shape[0])
        cols = cols or slice(0, shape[1] if len(shape) > 1 else 0)
        want = (rows.stop - rows.start, *((cols.stop - cols.start,) if len(shape) > 1 else ()))
        if out is None:
            out = torch.empty(want, dtype=dtype or pieces[0].tensor.dtype)
        in_place = out.is_contiguous()  # else through a temporary (a strided view of a packed tensor)
        target = out.view(want) if in_place else torch.empty(want, dtype=out.dtype)
        for piece in pieces:
            t = piece.tensor
            r0, r1 = max(rows.start, piece.row0), min(rows.stop, piece.row0 + t.shape[0])
            if r0 >= r1:
                continue
            src_rows = slice(r0 - piece.row0, r1 - piece.row0)
            dst_rows = slice(r0 - rows.start, r1 - rows.start)
            if len(shape) == 1:
                target[dst_rows].copy_(t[src_rows])
                continue
            c0, c1 = max(cols.start, piece.col0), min(cols.stop, piece.col0 + t.shape[1])
            if c0 < c1:
                target[dst_rows, c0 - cols.start : c1 - cols.start].copy_(
                    t[src_rows, c0 - piece.col0 : c1 - piece.col0]
                )
        if not in_place:
            out.copy_(target.reshape(out.shape))
        self._read += target.numel() * pieces[0].tensor.element_size()
        return out
