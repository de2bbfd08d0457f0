"""What differs between the library versions npubox's stacks pin, in one place.

The phases call these instead of the libraries where their APIs moved; each function says which
versions it bridges. Features are detected (an attribute, a signature, a dataclass field), so a
version in between works as its API does. Heavy imports stay inside the functions.

    tokenizers   0.19 (MindSpeed-LLM 2.0.0) … 0.23      encode_batch_fast arrived in 0.20; 0.20 writes
                                                        BPE merges as pairs, which 0.19 cannot read
    transformers 4.36 (ModelLink 1.0) … 5.x             `torch_dtype` became `dtype` in 4.56;
                                                        legacy tuple KV caches before DynamicCache
    torch        2.1 (2.0.0, ModelLink) … 2.13          weights-only loading of allowlisted classes
                                                        (argparse.Namespace) from 2.4
    Megatron     bcce6f, core_r0.8.0, core_v0.12.1, megatron-core 0.16
                                                        GPTDataset's config and builder, the null tokenizer
"""

from __future__ import annotations

import copy
import inspect
import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from llm.regular_file import require_regular

# --- tokenizers ---------------------------------------------------------------------------------


def encode_batch(tokenizer, texts: list[str], add_special_tokens: bool):
    """`Tokenizer.encode_batch_fast` (tokenizers >= 0.20: no character offsets, the same ids), else
    `encode_batch`."""
    fast = getattr(tokenizer, "encode_batch_fast", None)
    return (fast or tokenizer.encode_batch)(texts, add_special_tokens=add_special_tokens)


def portable_tokenizer_json(path: Path) -> None:
    """Rewrite a tokenizer.json so that every tokenizers release reads it: BPE merges as
    "left right" strings (what 0.19 and older write and read) instead of [left, right] pairs
    (0.20 and later write those, and read both). Byte-level BPE tokens hold no space, so the
    string form is unambiguous; a merge with a space keeps the pair form."""
    import json

    data = json.loads(path.read_text(encoding="utf-8"))
    model = data.get("model") or {}
    merges = model.get("merges")
    if model.get("type") != "BPE" or not merges or not isinstance(merges[0], list):
        return
    if any(" " in part for pair in merges for part in pair):
        return
    model["merges"] = [" ".join(pair) for pair in merges]
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# --- transformers -------------------------------------------------------------------------------


def dtype_kwargs(dtype) -> dict[str, Any]:
    """The keyword transformers takes for a model's dtype: `dtype` from 4.56, `torch_dtype` before."""
    import transformers
    from packaging.version import Version

    return {"dtype": dtype} if Version(transformers.__version__) >= Version("4.56") else {"torch_dtype": dtype}


def repeat_cache(cache, times: int):
    """A copy of a prefix's KV cache repeated ``times`` along the batch: DynamicCache repeats itself
    (transformers >= 4.38); a legacy tuple of (key, value) per layer is repeated here."""
    if hasattr(cache, "batch_repeat_interleave"):
        out = copy.deepcopy(cache)
        out.batch_repeat_interleave(times)
        return out
    return tuple(tuple(t.repeat_interleave(times, dim=0) for t in layer) for layer in cache)


# --- torch --------------------------------------------------------------------------------------


# Megatron-LM (core_v0.12 on, and core_r0.8.0's ModelType) pickles enums and run state in a checkpoint's 'args' and
# 'rerun_state_machine' entries; MindSpeed-LLM adds its own. npubox reads tensors and a few plain shape fields, so
# objects of those classes load as inert placeholders, never as the classes themselves.
OPAQUE_MODULES = ("megatron.", "mindspeed", "modellink.", "ascendspeed.")


class Opaque:
    """Stands for an object of a Megatron / MindSpeed class in a checkpoint; keeps what it was built from."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state


def opaque_globals(path: Path) -> list:
    """(Opaque, name) for each Megatron / MindSpeed global that ``path``'s pickle names, for torch.load's
    allowlist (torch >= 2.5; older torch: load_weights_only maps them itself)."""
    try:
        from torch.serialization import get_unsafe_globals_in_checkpoint
    except ImportError:
        return []
    require_regular(path, "a torch checkpoint file")
    try:
        names = get_unsafe_globals_in_checkpoint(path)
    except Exception:  # an unreadable file: torch.load names the problem
        return []
    return [(Opaque, name) for name in names if name.startswith(OPAQUE_MODULES)]


def _opaque_getattr(owner, name: str):
    """`getattr(EnumClass, "member")`, how some Pythons pickle an Enum member: allowed only on placeholders."""
    if owner is Opaque or isinstance(owner, Opaque):
        return Opaque(owner, name)
    raise pickle.UnpicklingError(f"getattr on {type(owner).__name__} is not allowed in weights-only loading")


def _allowlist_pickle(extra: Iterable):
    """A pickle module whose Unpickler resolves only torch's weights-only allowlist plus ``extra``, Megatron's and
    MindSpeed's classes as placeholders, for torch < 2.4, whose weights-only unpickler cannot rebuild an
    argparse.Namespace."""
    from torch import _weights_only_unpickler

    allowed = dict(_weights_only_unpickler._get_allowed_globals())
    for item in extra:
        if isinstance(item, tuple):  # (class, "module.name") as torch >= 2.5 takes it
            allowed[item[1]] = item[0]
        else:
            allowed[f"{item.__module__}.{item.__qualname__}"] = item

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            key = f"{module}.{name}"
            if key in allowed:
                return allowed[key]
            if key.startswith(OPAQUE_MODULES):
                return Opaque
            if key in ("__builtin__.getattr", "builtins.getattr"):
                return _opaque_getattr
            raise pickle.UnpicklingError(f"{key} is not on the allowlist of weights-only loading")

    module = type(pickle)("npubox_allowlist_pickle")
    module.Unpickler = Unpickler
    module.load = pickle.load
    module.__name__ = "pickle"
    return module


def load_weights_only(path: Path | str, allowed: Iterable = (), map_location: Any = "cpu", mmap: bool = True):
    """`torch.load(weights_only=True)` that also admits the classes in ``allowed`` (torch >= 2.4:
    `safe_globals`; older torch: the same allowlist applied through pickle's `find_class`, with Megatron's and
    MindSpeed's classes as placeholders)."""
    import torch

    allowed = list(allowed)
    path = str(require_regular(path, "a torch checkpoint file"))  # str: torch 2.1 maps only a str with mmap=True
    if hasattr(torch.serialization, "safe_globals"):
        try:
            with torch.serialization.safe_globals(allowed):
                return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
        except pickle.UnpicklingError as e:
            # Some Pythons (Debian bookworm's 3.11.2; 3.11.7 does not) pickle an Enum member (Megatron's ModelType,
            # AttnBackend, ...) as getattr(Enum, "name"), which torch's weights-only unpickler refuses: the same
            # allowlist below, with getattr allowed on placeholders only.
            if "getattr" not in str(e):
                raise
    return torch.load(
        path, map_location=map_location, weights_only=False, mmap=mmap, pickle_module=_allowlist_pickle(allowed)
    )


# --- Megatron -----------------------------------------------------------------------------------


def null_tokenizer(vocab_size: int):
    """Megatron's tokenizer for data that is already token ids: megatron.core.tokenizers (0.16) or
    megatron.training's _NullTokenizer (core_r0.8.0, core_v0.12.1)."""
    try:
        from megatron.core.tokenizers.text.libraries.null_tokenizer import NullTokenizer
    except ImportError:
        from megatron.training.tokenizer.tokenizer import _NullTokenizer as NullTokenizer
    return NullTokenizer(vocab_size)


def build_gpt_dataset(prefix: str, seq_length: int, num_samples: int, seed: int, cache_dir: str, vocab_size: int):
    """Megatron's own GPTDataset over the indexed dataset ``prefix`` (training split only).

    The config's fields and the builder's arguments differ: a `tokenizer` field from core_r0.8.0,
    `create_attention_mask` from 0.9; `is_built_on_rank` is a config field in bcce6f and a builder
    argument later; bcce6f's `blend` is a flat list of prefixes."""
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    fields = GPTDatasetConfig.__dataclass_fields__
    kwargs: dict[str, Any] = dict(
        random_seed=seed, sequence_length=seq_length, split="100,0,0", path_to_cache=cache_dir
    )
    for name in ("reset_position_ids", "reset_attention_mask", "eod_mask_loss", "create_attention_mask"):
        if name in fields:
            kwargs[name] = False  # documents are already token ids; the causal mask is made in attention
    if "tokenizer" in fields:
        kwargs["tokenizer"] = null_tokenizer(vocab_size)
    if "is_built_on_rank" in fields:  # bcce6f
        kwargs.update(is_built_on_rank=lambda: True, blend=[prefix])
        builder = BlendedMegatronDatasetBuilder(GPTDataset, [num_samples, 0, 0], GPTDatasetConfig(**kwargs))
    else:
        kwargs["blend"] = ([prefix], None)
        builder = BlendedMegatronDatasetBuilder(
            GPTDataset, [num_samples, 0, 0], lambda: True, GPTDatasetConfig(**kwargs)
        )
    return builder.build()[0]


def gpt_local_layer_spec():
    """megatron-core's local (no Transformer Engine) GPT layer spec with RMSNorm: the
    `normalization` argument exists from core_v0.12; before it the spec's norm follows the config."""
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    if "normalization" in inspect.signature(get_gpt_layer_local_spec).parameters:
        return get_gpt_layer_local_spec(normalization="RMSNorm")
    return get_gpt_layer_local_spec()
