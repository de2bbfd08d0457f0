"""Hugging Face checkpoints: check a directory before any work, read tensors lazily, write sharded safetensors.

Reading opens the shard with ``safetensors.safe_open`` for each read and slices only the rows /
columns asked for, so neither the model nor a whole shard's mapping stays in memory. Writing streams
each shard: its header first (computed from the shapes), then each tensor a few rows at a time.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from llm.convert.keymap import IGNORED_SUFFIXES, canonical_shape, hf_location, hf_shape, hf_tensors
from llm.errors import NpuboxError
from llm.recipes.hfconfig import disagreements, hf_config, read_hf_config

if TYPE_CHECKING:
    import torch

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
# Files of a HF model directory that are not weights and travel with them (tokenizer, remote code).
TOKENIZER_GLOBS = (
    "tokenizer*",
    "vocab*",
    "merges.txt",
    "*.tiktoken",
    "special_tokens_map.json",
    "generation_config.json",
    "*.py",
)
DTYPE_NAMES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32", "F64": "float64"}


def read_config(hf_dir: Path) -> dict:
    return read_hf_config(hf_dir / "config.json")


def shard_map(hf_dir: Path) -> dict[str, str]:
    """HF tensor name → shard file name, from the index (or the single ``model.safetensors``),
    after checking that the index's shards and the directory's ``*.safetensors`` are the same set."""
    from safetensors import SafetensorError, safe_open

    index = hf_dir / INDEX_FILE
    present = sorted(p.name for p in hf_dir.glob("*.safetensors"))
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise NpuboxError(f"{index}: expected JSON with a 'weight_map' object ({e!r})") from None
        listed = sorted(set(weight_map.values()))
        missing = [s for s in listed if s not in present]
        extra = [s for s in present if s not in listed]
        if missing:
            raise NpuboxError(f"{index} names shard(s) {', '.join(missing)} that are not in {hf_dir}")
        if extra:
            raise NpuboxError(
                f"{hf_dir}: shard(s) {', '.join(extra)} are not listed in {INDEX_FILE}; remove them or fix the index"
            )
    elif present == [SINGLE_FILE]:
        weight_map = None
    elif not present:
        raise NpuboxError(f"{hf_dir}: no {SINGLE_FILE} and no {INDEX_FILE}; expected a HF safetensors checkpoint")
    else:
        raise NpuboxError(f"{hf_dir}: {len(present)} safetensors files ({', '.join(present)}) but no {INDEX_FILE}")

    tensors: dict[str, str] = {}
    for shard in sorted(set(weight_map.values())) if weight_map else [SINGLE_FILE]:
        path = hf_dir / shard
        try:
            with safe_open(path, framework="pt") as f:
                keys = list(f.keys())
        except (SafetensorError, OSError) as e:
            raise NpuboxError(f"{path}: not a readable safetensors file ({e})") from None
        for key in keys:
            tensors[key] = shard
    if weight_map:
        wrong = [k for k, s in weight_map.items() if tensors.get(k) != s]
        if wrong:
            raise NpuboxError(
                f"{index}: {len(wrong)} tensor(s) are not in the shard it names, e.g. {wrong[0]!r} "
                f"(index says {weight_map[wrong[0]]}, found in {tensors.get(wrong[0], 'no shard')})"
            )
    return tensors


class HfSource:
    """Canonical tensors read lazily from a HF directory, checked against ``recipe`` on open."""

    def __init__(self, hf_dir: Path, recipe):
        from safetensors import safe_open

        self.dir, self.recipe = Path(hf_dir), recipe
        problems = disagreements(recipe, read_config(self.dir))
        if problems:
            raise NpuboxError(f"{self.dir / 'config.json'} disagrees with recipe {recipe.name}: " + "; ".join(problems))
        self.shard_of = shard_map(self.dir)
        expected = {key: hf_shape(recipe, parts) for key, parts in hf_tensors(recipe)}
        missing = [k for k in expected if k not in self.shard_of]
        if missing:
            raise NpuboxError(
                f"{self.dir}: {len(missing)} tensor(s) of a {recipe.family} model are missing, e.g. {missing[0]!r}"
            )
        tolerated = {"lm_head.weight"} if recipe.architecture.tie_embeddings else set()
        extra = [
            k for k in self.shard_of if k not in expected and k not in tolerated and not k.endswith(IGNORED_SUFFIXES)
        ]
        if extra:
            raise NpuboxError(
                f"{self.dir}: {len(extra)} tensor(s) that recipe {recipe.name} does not have, e.g. {extra[0]!r} "
                f"in {self.shard_of[extra[0]]}"
            )
        dtypes = set()
        for shard in sorted(set(self.shard_of.values())):
            with safe_open(self.dir / shard, framework="pt") as f:
                for key in f.keys():
                    if key not in expected:
                        continue
                    sl = f.get_slice(key)
                    shape, dtype = tuple(sl.get_shape()), sl.get_dtype()
                    if shape != expected[key]:
                        raise NpuboxError(
                            f"{self.dir / shard}: tensor {key!r} has shape {list(shape)}, "
                            f"recipe {recipe.name} expects {list(expected[key])}"
                        )
                    if dtype not in DTYPE_NAMES:
                        raise NpuboxError(
                            f"{self.dir / shard}: tensor {key!r} has dtype {dtype}; expected BF16, F16 or F32"
                        )
                    dtypes.add(dtype)
        if len(dtypes) != 1:
            raise NpuboxError(f"{self.dir}: tensors mix dtypes {sorted(dtypes)}; expected one floating dtype")
        self.dtype_name = DTYPE_NAMES[dtypes.pop()]

    @property
    def dtype(self) -> torch.dtype:
        import torch

        return getattr(torch, self.dtype_name)

    def get(
        self,
        name: str,
        rows: slice | None = None,
        cols: slice | None = None,
        out: torch.Tensor | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Rows / columns of canonical tensor ``name``, copied once: into ``out`` when given (any
        strides, same number of elements), else into a new tensor of ``dtype`` (default: as stored)."""
        import torch
        from safetensors import safe_open

        loc = hf_location(self.recipe, name)
        n = canonical_shape(self.recipe, name)[0]
        rows = rows or slice(0, n)
        r = slice(loc.row_offset + rows.start, loc.row_offset + rows.stop)
        with safe_open(self.dir / self.shard_of[loc.key], framework="pt") as f:
            sl = f.get_slice(loc.key)
            # A view of the shard's mapping: copy out only what was asked for, so the mapping
            # (and its resident pages) goes away when the file closes.
            view = sl[r] if len(sl.get_shape()) == 1 else sl[r, cols or slice(None)]
            if out is None:
                out = torch.empty(view.shape, dtype=dtype or view.dtype)
            out.copy_(view.reshape(out.shape))
        return out


def plan_shards(recipe, itemsize: int, max_shard_bytes: int) -> list[list[tuple[str, list[str]]]]:
    """HF tensors grouped into shards of at most ``max_shard_bytes`` (a bigger tensor gets its own)."""
    shards: list[list[tuple[str, list[str]]]] = [[]]
    size = 0
    for key, parts in hf_tensors(recipe):
        nbytes = itemsize
        for dim in hf_shape(recipe, parts):
            nbytes *= dim
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((key, parts))
        size += nbytes
    return shards


SAFETENSORS_DTYPES = {name: code for code, name in DTYPE_NAMES.items()}  # torch dtype name -> safetensors code
CHUNK_BYTES = 64 * 2**20  # rows of a tensor read and written at once


def write_safetensors(
    path: Path, entries: list[tuple[str, list[str]]], recipe, source, dtype: torch.dtype, on_tensor=lambda: None
) -> int:
    """Write HF tensors ``entries`` (key, the canonical parts stacked by rows in it) as one safetensors file,
    streaming: the header is known from the shapes, then each tensor's rows follow a chunk at a time, read from
    ``source`` and converted to ``dtype``. Returns the data bytes written. The format: an 8-byte little-endian header
    length, the JSON header (``dtype``, ``shape``, ``data_offsets`` per tensor; padded with spaces to 8 bytes), the
    tensors' bytes back to back in header order (huggingface/safetensors, docs "Format")."""
    import torch

    itemsize = torch.tensor([], dtype=dtype).element_size()
    code = SAFETENSORS_DTYPES[str(dtype).removeprefix("torch.")]
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for key, parts in entries:
        shape = hf_shape(recipe, parts)
        nbytes = math.prod(shape) * itemsize
        header[key] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    written = 0
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for _key, parts in entries:
            for part in parts:
                shape = canonical_shape(recipe, part)
                step = max(1, CHUNK_BYTES // (math.prod(shape[1:]) * itemsize))
                for start in range(0, shape[0], step):
                    rows = source.get(part, rows=slice(start, min(shape[0], start + step)), dtype=dtype)
                    data = rows.contiguous().view(-1).view(torch.uint8).numpy()
                    f.write(memoryview(data))
                    written += data.nbytes
                    del rows, data
            on_tensor()
    if written != offset:
        raise AssertionError(f"{path}: wrote {written} bytes of tensor data, header says {offset}")
    return written


def write_hf(
    source, recipe, out_dir: Path, dtype: torch.dtype, max_shard_bytes: int, tokenizer_dir: Path | None, progress
) -> None:
    """Write ``source``'s model as HF safetensors shards + index + config.json into ``out_dir`` (a fresh
    directory), streaming: a few rows of one tensor in memory at a time."""
    import torch

    shards = plan_shards(recipe, torch.tensor([], dtype=dtype).element_size(), max_shard_bytes)
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map, total = {}, 0
    task = progress.add_task("HF shards", total=sum(len(s) for s in shards))
    for name, shard in zip(names, shards):
        total += write_safetensors(
            out_dir / name, shard, recipe, source, dtype, on_tensor=lambda: progress.advance(task)
        )
        weight_map.update({key: name for key, _ in shard})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out_dir / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    dtype_name = str(dtype).removeprefix("torch.")
    (out_dir / "config.json").write_text(json.dumps(hf_config(recipe, dtype_name), indent=2) + "\n", encoding="utf-8")
    for path in tokenizer_files(tokenizer_dir):
        shutil.copy2(path, out_dir / path.name)


def tokenizer_files(hf_dir: Path | None) -> Iterator[Path]:
    if hf_dir is None or not hf_dir.is_dir():
        return
    seen = set()
    for pattern in TOKENIZER_GLOBS:
        for path in sorted(hf_dir.glob(pattern)):
            if path.is_file() and path.name not in seen:
                seen.add(path.name)
                yield path
