"""Check that a Megatron indexed dataset's ``PREFIX.bin`` is the one its ``PREFIX.idx`` describes.

The ``.idx`` layout is megatron-core's ``_IndexWriter`` (megatron/core/datasets/indexed_dataset.py):
``MMIDIDX\\x00\\x00``, version 1 (``<Q``), dtype code (``<B``), sequence count (``<Q``), document count
(``<Q``), int32 sequence lengths, int64 byte offsets into the ``.bin``, int64 document indices. Megatron
reads both files with ``numpy.memmap`` and trusts them: a ``.bin`` from another run trains on whatever
bytes are there, and a truncated file fails deep inside the data loader. This check reads the index in
chunks (memory stays flat however large the dataset) and says which file is wrong.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llm.errors import NpuboxError

INDEX_HEADER = b"MMIDIDX\x00\x00"
INDEX_VERSION = 1
HEADER_SIZE = len(INDEX_HEADER) + 8 + 1 + 8 + 8
# megatron.core.datasets.indexed_dataset.DType codes.
DTYPE_CODES = {
    np.dtype(np.uint8): 1,
    np.dtype(np.int8): 2,
    np.dtype(np.int16): 3,
    np.dtype(np.int32): 4,
    np.dtype(np.int64): 5,
    np.dtype(np.float64): 6,
    np.dtype(np.float32): 7,
    np.dtype(np.uint16): 8,
}
ITEMSIZE = {code: dtype.itemsize for dtype, code in DTYPE_CODES.items()}  # bytes per token
CHUNK = 1 << 20  # index entries handled at once
REMEDY = "re-run `python -m llm preprocess` to write both files together"


@dataclass(frozen=True)
class IndexedDatasetInfo:
    sequences: int
    documents: int
    tokens: int
    itemsize: int


def check_indexed_dataset(prefix: Path | str) -> IndexedDatasetInfo:
    """Refuse, in one sentence naming the file, a ``.idx`` that is not whole or a ``.bin`` it does not describe."""
    prefix = str(prefix)
    idx, bin_ = Path(prefix + ".idx"), Path(prefix + ".bin")
    idx_size = idx.stat().st_size
    with open(idx, "rb") as f:
        head = f.read(HEADER_SIZE)
    if len(head) < HEADER_SIZE or head[: len(INDEX_HEADER)] != INDEX_HEADER:
        raise NpuboxError(f"{idx}: not a Megatron index (no MMIDIDX header of {HEADER_SIZE} bytes); {REMEDY}")
    version, code, n, docs = struct.unpack("<QBQQ", head[len(INDEX_HEADER) :])
    if version != INDEX_VERSION or code not in ITEMSIZE:
        raise NpuboxError(f"{idx}: index version {version}, dtype code {code}; expected version 1 and a code in 1..8")
    expected_idx = HEADER_SIZE + 4 * n + 8 * n + 8 * docs
    if idx_size != expected_idx:
        raise NpuboxError(
            f"{idx}: {idx_size:,} bytes, but its header announces {n:,} sequences and {docs:,} document indices "
            f"({expected_idx:,} bytes): the index is truncated or corrupt; {REMEDY}"
        )
    itemsize = ITEMSIZE[code]
    if n:
        lengths = np.memmap(idx, dtype=np.int32, mode="r", offset=HEADER_SIZE, shape=(n,))
        offsets = np.memmap(idx, dtype=np.int64, mode="r", offset=HEADER_SIZE + 4 * n, shape=(n,))
    end, tokens = 0, 0  # byte offset where the next sequence must start
    for start in range(0, n, CHUNK):
        chunk_lengths = np.asarray(lengths[start : start + CHUNK], dtype=np.int64)
        chunk_offsets = np.asarray(offsets[start : start + CHUNK])
        if (chunk_lengths < 0).any():
            raise NpuboxError(f"{idx}: holds a negative sequence length; the index is corrupt; {REMEDY}")
        expected = end + np.concatenate(([0], np.cumsum(chunk_lengths[:-1]))) * itemsize
        if not np.array_equal(chunk_offsets, expected):
            bad = start + int(np.argmax(chunk_offsets != expected))
            raise NpuboxError(
                f"{idx}: sequence {bad} starts at byte {int(offsets[bad]):,} of the .bin where the lengths before it "
                f"put it at {int(expected[bad - start]):,}; the index is corrupt; {REMEDY}"
            )
        tokens += int(chunk_lengths.sum())
        end = int(expected[-1]) + int(chunk_lengths[-1]) * itemsize
    if docs:
        doc_index = np.memmap(idx, dtype=np.int64, mode="r", offset=HEADER_SIZE + 12 * n, shape=(docs,))
        if doc_index[0] != 0 or doc_index[-1] != n or (docs > 1 and (np.diff(doc_index) < 0).any()):
            raise NpuboxError(
                f"{idx}: its document indices do not run from 0 to {n:,} in order; the index is corrupt; {REMEDY}"
            )
    bin_size = bin_.stat().st_size
    if bin_size != end:
        what = "shorter than" if bin_size < end else "longer than"
        raise NpuboxError(
            f"{bin_}: {bin_size:,} bytes, {what} the {end:,} bytes ({tokens:,} tokens of {itemsize} bytes in {n:,} "
            f"sequences) that {idx.name} describes: the .bin is truncated or the two files do not belong together; "
            f"{REMEDY}"
        )
    return IndexedDatasetInfo(n, docs, tokens, itemsize)
