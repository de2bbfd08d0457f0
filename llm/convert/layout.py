"""Megatron's checkpoint layouts: one table of the tensors a rank file holds, with each tensor's key in each layout,
how tensor parallelism splits it and how it is packed; and the packings, both directions side by side.

Both directions of the converter walk ``TENSORS``: the writer builds a rank's ``'model'`` from it, the reader finds
a canonical tensor's blocks in the rank files through it (the way Megatron-LM's tools/checkpoint/schema_core.py
names one model's parameters for its loaders and savers). A layout is a column of the table:

    mcore    megatron-core's GPTModel, local spec: flat keys (``decoder.layers.0.self_attention.linear_qkv.weight``).
             What Megatron-LM core_r0.8.0 and later and MindSpeed-LLM 2.x / 26.x (--use-mcore-models) train.
    legacy   Megatron-LM's legacy GPTModel (megatron/model/ at bcce6f54), what ModelLink v1.0.RC1.0 trains when its
             example script has no --use-mcore-models (examples/qwen/pretrain_qwen_7b_ptd.sh): a nested state dict,
             language_model -> embedding / encoder / output_layer (gpt_model.py, language_model.py and
             transformer.py ``state_dict_for_save_checkpoint``). Keys here separate nesting levels with "/".

Both lay out one TP rank's tensors the same way:

* QKV is packed per query group: for group 0 its q rows (heads/groups heads × d), then its k rows (d), then its v
  rows (d); then group 1, ... Each TP rank holds whole groups (Megatron-LM core_v0.12.1
  megatron/core/transformer/attention.py SelfAttention.get_query_key_value_tensors; bcce6f54
  megatron/model/transformer.py ParallelAttention.forward).
* SwiGLU's fc1 of a rank is [gate rows of the rank; up rows of the rank], each split by TP first (bcce6f54
  ParallelMLP's ``swiglu``: ``silu(chunk 0) * chunk 1`` of the rank's own output; ModelLink v1.0.RC1.0
  tools/checkpoint/saver_megatron.py packs its checkpoints the same way).
* The attention output projection and fc2 are split by columns (their input dimension).
* Embedding and output rows are padded with zeros to ``padded_vocab_size(tp)``, then split by rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

Split = Literal["replicated", "rows", "columns", "vocab"]
# Where a tensor is: on every stage that holds layer N ("layer", numbered within the stage), on the first or the last
# pipeline stage, or on the last stage only when embeddings are tied and the pipeline has more than one stage (its
# copy of the embedding, which the output layer uses).
Stage = Literal["layer", "first", "last", "tied head"]


@dataclass(frozen=True)
class Layout:
    name: str
    model: str  # what the rank files hold, in a sentence's words
    layer_prefix: str  # where layer N's tensors are; N is numbered within the pipeline stage
    # The checkpoint 'args' this layout's Megatron reads beyond what llm.checkpoint.make_args writes.
    args: dict[str, Any]


# Megatron-LM bcce6f54 megatron/checkpointing.py: load_args_from_checkpoint forces these from the checkpoint (with
# --use-checkpoint-args), check_checkpoint_args compares add_position_embedding with the run's (default True:
# ModelLink v1.0.RC1.0's scripts pass no --no-position-embedding; its tools/checkpoint/loader_qwen_hf.py writes True
# too); rope models use no position table whatever it says (language_model.py Embedding).
LEGACY_ARGS = {
    "add_position_embedding": True,
    "use_rotary_position_embeddings": True,
    "rotary_percent": 1.0,
    "apply_layernorm_1p": False,
    "virtual_pipeline_model_parallel_size": None,
    "num_layers_per_virtual_pipeline_stage": None,
}
MCORE = Layout("mcore", "a megatron-core model", "decoder.layers.{}.", {})
LEGACY = Layout("legacy", "Megatron's legacy model", "language_model/encoder/layers.{}.", LEGACY_ARGS)
LAYOUTS = {layout.name: layout for layout in (MCORE, LEGACY)}


@dataclass(frozen=True)
class MegatronTensor:
    """One tensor of a rank file: the canonical tensors in it (keymap.py's names, a layer's without ``layers.N.``;
    none for megatron-core's ``_extra_state`` entries, saved as None), how TP splits it, how its parts are packed,
    where it is, and its key in each layout (None: not in that layout)."""

    parts: tuple[str, ...]
    split: Split
    packing: Literal["qkv", "fc1"] | None
    stage: Stage
    mcore: str | None
    legacy: str | None

    def key(self, layout: Layout) -> str | None:
        return getattr(self, layout.name)


T = MegatronTensor
# Megatron-LM bcce6f54 megatron/model: GPTModel.state_dict_for_save_checkpoint nests language_model (and, on the last
# stage of a tied model, word_embeddings_for_head: module.py initialize_word_embeddings); TransformerLanguageModel
# nests embedding, encoder and output_layer (language_model.py); Embedding nests word_embeddings; the encoder
# (ParallelTransformer) is flat: layers.N.input_norm, .self_attention.query_key_value / .dense, .post_attention_norm,
# .mlp.dense_h_to_4h / .dense_4h_to_h, and final_norm (transformer.py). ModelLink v1.0.RC1.0 keeps these names
# (modellink/model/transformer.py: query_key_value gets a bias with --add-qkv-bias; tools/checkpoint/saver_megatron.py
# reads them back by the same names).
# fmt: off
TENSORS: tuple[MegatronTensor, ...] = (
    # parts                         split         packing stage
    #   mcore key (megatron-core, local spec)     legacy key (Megatron-LM bcce6f54 megatron/model)
    T(("embed",),                   "vocab",      None,   "first",
      "embedding.word_embeddings.weight",         "language_model/embedding/word_embeddings/weight"),
    T(("ln1",),                     "replicated", None,   "layer",
      "input_layernorm.weight",                   "input_norm.weight"),
    T(("q", "k", "v"),              "rows",       "qkv",  "layer",
      "self_attention.linear_qkv.weight",         "self_attention.query_key_value.weight"),
    T(("q_bias", "k_bias", "v_bias"), "rows",      "qkv",  "layer",
      "self_attention.linear_qkv.bias",           "self_attention.query_key_value.bias"),
    T(("o",),                       "columns",    None,   "layer",
      "self_attention.linear_proj.weight",        "self_attention.dense.weight"),
    T(("ln2",),                     "replicated", None,   "layer",
      "pre_mlp_layernorm.weight",                 "post_attention_norm.weight"),
    T(("gate", "up"),               "rows",       "fc1",  "layer",
      "mlp.linear_fc1.weight",                    "mlp.dense_h_to_4h.weight"),
    T(("down",),                    "columns",    None,   "layer",
      "mlp.linear_fc2.weight",                    "mlp.dense_4h_to_h.weight"),
    T((),                           "replicated", None,   "layer",
      "self_attention.linear_qkv._extra_state",   None),
    T((),                           "replicated", None,   "layer",
      "self_attention.linear_proj._extra_state",  None),
    T((),                           "replicated", None,   "layer",
      "mlp.linear_fc1._extra_state",              None),
    T((),                           "replicated", None,   "layer",
      "mlp.linear_fc2._extra_state",              None),
    T(("final_ln",),                "replicated", None,   "last",
      "decoder.final_layernorm.weight",           "language_model/encoder/final_norm.weight"),
    T(("lm_head",),                 "vocab",      None,   "last",
      "output_layer.weight",                      "language_model/output_layer/weight"),
    T(("embed",),                   "vocab",      None,   "tied head",
      "output_layer.weight",                      "word_embeddings_for_head/weight"),
    T((),                           "replicated", None,   "last",
      "output_layer._extra_state",                None),
)
# fmt: on
del T


def stage_tensors(stage: Stage) -> list[MegatronTensor]:
    return [t for t in TENSORS if t.stage == stage]


def tensor_of(part: str) -> MegatronTensor:
    """The table's row that holds canonical tensor ``part`` (a layer's without ``layers.N.``); for the embedding, the
    first stage's (the tied head is a copy of it)."""
    return next(t for t in TENSORS if part in t.parts)


def detect_layout(model: dict) -> Layout | None:
    """The layout of a rank file's ``'model'`` state dict, from its keys (None: neither)."""
    if isinstance(model.get("language_model"), dict):
        return LEGACY
    if any(isinstance(k, str) and k.startswith(("decoder.", "embedding.", "output_layer.")) for k in model):
        return MCORE
    return None


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """A state dict from ``{key: value}`` whose keys separate nesting levels with "/" (flat keys stay flat)."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *levels, last = key.split("/")
        node = out
        for level in levels:
            node = node.setdefault(level, {})
        node[last] = value
    return out


def lookup(state: dict[str, Any], key: str) -> Any:
    """The value at ``key`` ("/" between nesting levels); KeyError when it is not there."""
    node: Any = state
    for level in key.split("/"):
        if not isinstance(node, dict):
            raise KeyError(key)
        node = node[level]
    return node


def tp_range(total: int, tp: int, rank: int) -> slice:
    """The rows (or columns) of a dimension of size ``total`` that TP rank ``rank`` of ``tp`` holds."""
    step = total // tp
    return slice(rank * step, (rank + 1) * step)


def tp_share(a, part: str, tp: int, rank: int) -> slice:
    """The rows of canonical tensor ``part`` (its columns, for one split by columns) that TP rank ``rank`` holds:
    whole query groups for q, k, v and o, ffn rows for gate, up and down, padded vocabulary rows for embed and
    lm_head. ``a``: the recipe's architecture."""
    d, groups = a.head_dim, a.num_query_groups
    q_rows = a.num_attention_heads // groups * d
    units_of = {
        **dict.fromkeys(("q", "q_bias", "o"), (q_rows, groups)),
        **dict.fromkeys(("k", "v", "k_bias", "v_bias"), (d, groups)),
        **dict.fromkeys(("gate", "up", "down"), (1, a.ffn_hidden_size)),
        **dict.fromkeys(("embed", "lm_head"), (1, a.padded_vocab_size(tp))),
    }
    unit, count = units_of[part]  # each unit whole on one rank: a query group's rows, an ffn row, a vocabulary row
    units = tp_range(count, tp, rank)
    return slice(units.start * unit, units.stop * unit)


@dataclass(frozen=True)
class Piece:
    """Where one TP rank holds a block of a canonical tensor: rows [row0, row0 + len) and columns [col0, col0 + width)
    of the canonical tensor are ``tensor`` (a view into the rank's tensor)."""

    row0: int
    col0: int
    tensor: torch.Tensor


# read(part, canonical rows, into): copy rows of canonical tensor ``part`` into ``into`` (same number of elements).
Read = Callable[[str, slice, "torch.Tensor"], None]


def _empty(parts: tuple[str, ...], a, tp: int, rank: int, tail: tuple[int, ...], dtype) -> torch.Tensor:
    import torch

    rows = sum(s.stop - s.start for s in (tp_share(a, p, tp, rank) for p in parts))
    return torch.empty((rows, *tail), dtype=dtype)


def qkv_views(packed: torch.Tensor, a) -> tuple[torch.Tensor, ...]:
    """The q, k and v rows of a packed QKV weight or bias (a whole one, or one TP rank's), each shaped [query groups,
    rows per group, *rest]: in order, that part's rows of those groups."""
    d = a.head_dim
    q_rows = a.num_attention_heads // a.num_query_groups * d
    per_group = packed.view(-1, q_rows + 2 * d, *packed.shape[1:])
    return per_group[:, :q_rows], per_group[:, q_rows : q_rows + d], per_group[:, q_rows + d :]


def pack_qkv(read: Read, parts: tuple[str, ...], a, tp: int, rank: int, tail: tuple[int, ...], dtype) -> torch.Tensor:
    """TP rank ``rank``'s packed QKV (``parts`` q, k, v or their biases; ``tail`` (hidden,) for the weight, () for the
    bias): the q, k and v rows of its query groups, each read straight into its place."""
    packed = _empty(parts, a, tp, rank, tail, dtype)
    for part, view in zip(parts, qkv_views(packed, a)):
        read(part, tp_share(a, part, tp, rank), view)
    return packed


def unpack_qkv(packed: torch.Tensor, parts: tuple[str, ...], a, tp: int, rank: int) -> dict[str, list[Piece]]:
    """Where ``pack_qkv`` put each part's rows in TP rank ``rank``'s ``packed``: a block per query group."""
    out = {}
    for part, view in zip(parts, qkv_views(packed, a)):
        first = tp_share(a, part, tp, rank).start
        out[part] = [Piece(first + g * view.shape[1], 0, view[g]) for g in range(view.shape[0])]
    return out


def fc1_views(packed: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The gate and up rows of one TP rank's SwiGLU fc1 weight."""
    half = packed.shape[0] // 2
    return packed[:half], packed[half:]


def pack_fc1(read: Read, parts: tuple[str, ...], a, tp: int, rank: int, tail: tuple[int, ...], dtype) -> torch.Tensor:
    """TP rank ``rank``'s fc1 weight (``parts`` gate, up): its gate rows, then its up rows, read straight into place."""
    packed = _empty(parts, a, tp, rank, tail, dtype)
    for part, view in zip(parts, fc1_views(packed)):
        read(part, tp_share(a, part, tp, rank), view)
    return packed


def unpack_fc1(packed: torch.Tensor, parts: tuple[str, ...], a, tp: int, rank: int) -> dict[str, list[Piece]]:
    """Where ``pack_fc1`` put each part's rows in TP rank ``rank``'s ``packed``."""
    return {part: [Piece(tp_share(a, part, tp, rank).start, 0, view)] for part, view in zip(parts, fc1_views(packed))}


PACK = {"qkv": pack_qkv, "fc1": pack_fc1}
UNPACK = {"qkv": unpack_qkv, "fc1": unpack_fc1}
