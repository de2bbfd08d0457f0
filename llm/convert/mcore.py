"""Megatron-core checkpoints (local spec) written and read one TP × PP rank at a time.

Writing builds one rank's state dict from canonical tensors (reading only that rank's rows /
columns of each) and saves it before the next rank starts. Reading maps the rank files of one
pipeline stage with ``torch.load(mmap=True, weights_only=True)`` and copies the rows / columns asked
for from each TP rank's block of a tensor straight into the result (no merged copy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm import checkpoint
from llm.compat import opaque_globals
from llm.convert.keymap import canonical_shape
from llm.convert.layout import tp_range
from llm.errors import NpuboxError

if TYPE_CHECKING:
    import torch

LINEAR = ("self_attention.linear_qkv", "self_attention.linear_proj", "mlp.linear_fc1", "mlp.linear_fc2")


def stage_layers(layers_per_stage: list[int], stage: int) -> range:
    start = sum(layers_per_stage[:stage])
    return range(start, start + layers_per_stage[stage])


def rank_model_state(source, recipe, tp: int, tp_rank: int, layers: range, first: bool, last: bool,
                     dtype: "torch.dtype", on_layer=lambda: None) -> dict[str, Any]:
    """The ``'model'`` state dict of TP rank ``tp_rank`` holding global ``layers`` (keys numbered locally).

    Each byte is copied once, from the source straight into its place in the rank's tensors."""
    import torch

    a = recipe.architecture
    h, d, hpg = a.hidden_size, a.head_dim, a.num_attention_heads // a.num_query_groups
    vocab_rows = tp_range(a.padded_vocab_size(tp), tp, tp_rank)
    groups = tp_range(a.num_query_groups, tp, tp_rank)
    ffn = tp_range(a.ffn_hidden_size, tp, tp_rank)
    q_rows = slice(groups.start * hpg * d, groups.stop * hpg * d)
    kv_rows = slice(groups.start * d, groups.stop * d)
    n_groups, n_ffn = groups.stop - groups.start, ffn.stop - ffn.start

    def read(name: str, rows: slice | None = None, cols: slice | None = None, out=None):
        return source.get(name, rows=rows, cols=cols, out=out, dtype=dtype)

    def vocab_matrix(name: str):  # this rank's rows of the padded matrix; padding rows are zeros
        out = torch.empty((vocab_rows.stop - vocab_rows.start, h), dtype=dtype)
        real = max(0, min(vocab_rows.stop, a.vocab_size) - vocab_rows.start)
        if real > 0:
            read(name, rows=slice(vocab_rows.start, vocab_rows.start + real), out=out[:real])
        out[real:].zero_()
        return out

    def packed_qkv(c: str, suffix: str, tail: tuple[int, ...]):  # per group: [q heads; k; v] (layout.py)
        out = torch.empty((n_groups, hpg + 2, d, *tail), dtype=dtype)
        read(c + "q" + suffix, rows=q_rows, out=out[:, :hpg])
        read(c + "k" + suffix, rows=kv_rows, out=out[:, hpg])
        read(c + "v" + suffix, rows=kv_rows, out=out[:, hpg + 1])
        return out.view(-1, *tail)

    model: dict[str, Any] = {}
    if first:
        model["embedding.word_embeddings.weight"] = vocab_matrix("embed")
    for local, i in enumerate(layers):
        p, c = f"decoder.layers.{local}.", f"layers.{i}."
        model[p + "input_layernorm.weight"] = read(c + "ln1")
        model[p + "self_attention.linear_qkv.weight"] = packed_qkv(c, "", (h,))
        if a.add_qkv_bias:
            model[p + "self_attention.linear_qkv.bias"] = packed_qkv(c, "_bias", ())
        model[p + "self_attention.linear_proj.weight"] = read(c + "o", cols=q_rows)
        model[p + "pre_mlp_layernorm.weight"] = read(c + "ln2")
        fc1 = torch.empty((2 * n_ffn, h), dtype=dtype)  # [gate rows of this rank; up rows of this rank]
        read(c + "gate", rows=ffn, out=fc1[:n_ffn])
        read(c + "up", rows=ffn, out=fc1[n_ffn:])
        model[p + "mlp.linear_fc1.weight"] = fc1
        model[p + "mlp.linear_fc2.weight"] = read(c + "down", cols=ffn)
        for linear in LINEAR:  # what megatron-core's own state_dict() holds for local-spec linears
            model[p + linear + "._extra_state"] = None
        on_layer()
    if last:
        model["decoder.final_layernorm.weight"] = read("final_ln")
        if not a.tie_embeddings:
            model["output_layer.weight"] = vocab_matrix("lm_head")
        elif not first:  # tied, pp > 1: the last stage keeps its own copy of the embedding
            model["output_layer.weight"] = vocab_matrix("embed")
        model["output_layer._extra_state"] = None
    return {k: (v.clone() if v is not None and _is_view(v) else v) for k, v in model.items()}


def _is_view(t: "torch.Tensor") -> bool:
    # torch.save writes a view's whole storage: keep only what the rank needs.
    return t.untyped_storage().nbytes() != t.numel() * t.element_size()


def write_mcore(source, recipe, out_dir: Path, tp: int, layers_per_stage: list[int], dtype: "torch.dtype",
                dtype_name: str, iteration: int, num_layer_list: list[int] | None, progress) -> None:
    pp = len(layers_per_stage)
    args = checkpoint.make_args(recipe, tp=tp, pp=pp, params_dtype=dtype_name, num_layer_list=num_layer_list,
                                iteration=iteration)
    for stage in range(pp):
        layers = stage_layers(layers_per_stage, stage)
        for tp_rank in range(tp):
            name = checkpoint.rank_dir_name(tp_rank, stage, pp)
            task = progress.add_task(f"{name} layers {layers.start}-{layers.stop - 1}", total=len(layers) + 1)
            model = rank_model_state(source, recipe, tp, tp_rank, layers, stage == 0, stage == pp - 1, dtype,
                                     on_layer=lambda: progress.advance(task))
            state = {"model": model, "checkpoint_version": checkpoint.CHECKPOINT_VERSION, "iteration": iteration, "args": args}
            checkpoint.save_rank(out_dir, iteration, tp_rank, stage, pp, state, atomic=False)  # out_dir: atomic_dir
            del model, state
            progress.advance(task)
    checkpoint.write_latest(out_dir, iteration)


@dataclass(frozen=True)
class Piece:
    """Where one TP rank holds a block of a canonical tensor: rows [row0, row0 + len) and columns [col0, col0 + width)
    of the canonical tensor are ``tensor`` (a view into the rank file's mapping)."""

    row0: int
    col0: int
    tensor: "torch.Tensor"


class McoreSource:
    """Canonical tensors of a megatron-core checkpoint, read piece by piece from the TP ranks' files.

    Rank files are mapped (``torch.load(mmap=True)``), never loaded whole; each request copies only the rows and
    columns asked for, straight from each rank's block into the result. Mapped pages that were read stay resident
    while their file is mapped, so the files of a stage are dropped and mapped again after every ``REMAP_BYTES``
    read: memory stays near one tensor whatever the checkpoint's size."""

    REMAP_BYTES = 256 * 2**20

    def __init__(self, load_dir: Path, recipe):
        self.dir, self.recipe = Path(load_dir), recipe
        self.iteration = checkpoint.read_latest(self.dir)
        self.tp, self.pp = checkpoint.find_layout(self.dir, self.iteration)
        self._globals = opaque_globals(checkpoint.rank_file(self.dir, self.iteration, 0, 0, self.pp))
        first = checkpoint.load_rank(self.dir, self.iteration, 0, 0, self.pp, safe_globals=self._globals)
        args = first.get("args")
        a = recipe.architecture
        if args is not None:
            expected = dict(num_layers=a.num_layers, hidden_size=a.hidden_size, ffn_hidden_size=a.ffn_hidden_size,
                            num_attention_heads=a.num_attention_heads, num_query_groups=a.num_query_groups)
            for field_name, want in expected.items():
                have = getattr(args, field_name, want)
                if field_name == "num_query_groups" and not getattr(args, "group_query_attention", True):
                    have = getattr(args, "num_attention_heads", want)
                if have != want:
                    raise NpuboxError(f"{self.dir}: checkpoint args {field_name}={have}, recipe {recipe.name} has {want}")
            lst = getattr(args, "num_layer_list", None)
            lst = [int(x) for x in str(lst).split(",")] if lst else None
        else:
            lst = None
        self.layers_per_stage = checkpoint.layers_per_stage(a.num_layers, self.pp, lst)
        emb = first["model"].get("embedding.word_embeddings.weight")
        if emb is None:
            raise NpuboxError(f"{checkpoint.rank_file(self.dir, self.iteration, 0, 0, self.pp)}: no embedding.word_embeddings.weight")
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
            self._stage = [load(self.dir, self.iteration, t, stage, self.pp, safe_globals=self._globals)["model"]
                           for t in range(self.tp)]  # fmt: skip
            self._stage_no, self._read = stage, 0
        return self._stage

    def _tensor(self, stage: int, key: str) -> list["torch.Tensor"]:
        ranks = self._ranks(stage)
        try:
            return [r[key] for r in ranks]
        except KeyError:
            path = checkpoint.rank_file(self.dir, self.iteration, 0, stage, self.pp)
            raise NpuboxError(f"{path.parent.parent}: tensor {key!r} missing in a rank of pipeline stage {stage}") from None

    def _pieces(self, name: str) -> list[Piece]:
        """The blocks of canonical ``name`` in the rank files (layout.py describes the layout)."""
        a = self.recipe.architecture
        if name in ("embed", "lm_head"):
            stage = 0 if name == "embed" else self.pp - 1
            key = "embedding.word_embeddings.weight" if name == "embed" else "output_layer.weight"
            shards = self._tensor(stage, key)
            rows = shards[0].shape[0]
            return [Piece(t * rows, 0, shard[: max(0, min(rows, a.vocab_size - t * rows))])
                    for t, shard in enumerate(shards) if t * rows < a.vocab_size]  # fmt: skip
        if name == "final_ln":
            return [Piece(0, 0, self._tensor(self.pp - 1, "decoder.final_layernorm.weight")[0])]
        _, layer, t = name.split(".")
        stage, local = self.stage_of(int(layer))
        p = f"decoder.layers.{local}."
        if t in ("ln1", "ln2"):
            key = "input_layernorm.weight" if t == "ln1" else "pre_mlp_layernorm.weight"
            return [Piece(0, 0, self._tensor(stage, p + key)[0])]
        if t in ("o", "down"):  # split by columns
            key = "self_attention.linear_proj.weight" if t == "o" else "mlp.linear_fc2.weight"
            shards = self._tensor(stage, p + key)
            return [Piece(0, r * s.shape[1], s) for r, s in enumerate(shards)]
        if t in ("gate", "up"):  # each rank: [its gate rows; its up rows]
            shards = self._tensor(stage, p + "mlp.linear_fc1.weight")
            half = shards[0].shape[0] // 2
            return [Piece(r * half, 0, s[:half] if t == "gate" else s[half:]) for r, s in enumerate(shards)]
        # q, k, v (and biases): each rank holds whole query groups, each group [its q heads; k; v]
        suffix = "bias" if t.endswith("_bias") else "weight"
        shards = self._tensor(stage, p + f"self_attention.linear_qkv.{suffix}")
        d, hpg = a.head_dim, a.num_attention_heads // a.num_query_groups
        groups = a.num_query_groups // self.tp
        which, height = ("q", hpg * d) if t[0] == "q" else (t[0], d)
        first = {"q": 0, "k": hpg * d, "v": (hpg + 1) * d}[which]
        out = []
        for r, s in enumerate(shards):
            per_group = s.view(groups, (hpg + 2) * d, *s.shape[1:])
            for g in range(groups):
                out.append(Piece((r * groups + g) * height, 0, per_group[g, first: first + height]))
        return out

    def get(self, name: str, rows: slice | None = None, cols: slice | None = None,
            out: "torch.Tensor | None" = None, dtype: "torch.dtype | None" = None) -> "torch.Tensor":
        """Like HfSource.get: rows / columns of canonical ``name``, into ``out`` (same number of elements, any
        shape) or a new tensor of ``dtype`` (default: as stored)."""
        import torch

        shape = canonical_shape(self.recipe, name)
        pieces = self._pieces(name)
        inside = all(
            p.tensor.dim() == len(shape) and p.row0 + p.tensor.shape[0] <= shape[0]
            and (len(shape) == 1 or p.col0 + p.tensor.shape[1] <= shape[1])
            for p in pieces
        )  # fmt: skip
        if not inside or sum(p.tensor.numel() for p in pieces) != math.prod(shape):
            blocks = ", ".join(str(list(p.tensor.shape)) for p in pieces[:4])
            raise NpuboxError(f"{self.dir}: tensor {name} has TP rank blocks {blocks}{' ...' if len(pieces) > 4 else ''}; "
                              f"recipe {self.recipe.name} expects {list(shape)} in all")  # fmt: skip
        rows = rows or slice(0, shape[0])
        cols = cols or slice(0, shape[1] if len(shape) > 1 else 0)
        want = (rows.stop - rows.start, *((cols.stop - cols.start,) if len(shape) > 1 else ()))
        if out is None:
            out = torch.empty(want, dtype=dtype or pieces[0].tensor.dtype)
        target = out.view(want) if out.is_contiguous() else torch.empty(want, dtype=out.dtype)
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
                target[dst_rows, c0 - cols.start: c1 - cols.start].copy_(t[src_rows, c0 - piece.col0: c1 - piece.col0])
        if target is not out:
            out.copy_(target.reshape(out.shape))
        self._read += target.numel() * pieces[0].tensor.element_size()
        return out
