"""Megatron indexed datasets (``PREFIX.bin`` + ``PREFIX.idx``), written streaming under temporary names.

``.bin`` holds every sequence's token ids back to back. ``.idx`` is megatron-core's ``_IndexWriter``
layout (llm.indexed_dataset spells it out), with document indices ``[0, 1, ..., N]``: one sequence per
document.

Memory stays flat however long the input: sequence lengths go to a side file while writing and
the index is produced from it in chunks at the end.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from llm.atomic import fsync_dir, temp_beside
from llm.indexed_dataset import CHUNK, DTYPE_CODES, INDEX_HEADER, INDEX_VERSION


def optimal_dtype(vocab_size: int) -> np.dtype:
    """The token dtype Megatron's own preprocessing picks (``DType.optimal_dtype(tokenizer.vocab_size)``)."""
    return np.dtype(np.uint16) if vocab_size < 65500 else np.dtype(np.int32)


class IndexedDatasetWriter:
    """Append documents (one sequence each) to ``prefix.bin``; ``finish`` writes the index.

    Nothing appears under the final names until :func:`publish` renames the files."""

    def __init__(self, prefix: Path, dtype: np.dtype):
        self.bin_path = prefix.with_name(prefix.name + ".bin")
        self.idx_path = prefix.with_name(prefix.name + ".idx")
        self.dtype = np.dtype(dtype)
        self.bin_tmp = temp_beside(self.bin_path, ".tmp")
        self.idx_tmp = temp_beside(self.idx_path, ".tmp")
        self.lengths_tmp = temp_beside(self.idx_path, ".lengths")
        self._bin = open(self.bin_tmp, "wb")
        self._lengths = open(self.lengths_tmp, "wb")
        self.sequences = 0
        self.tokens = 0

    def add_documents(self, ids: np.ndarray, lengths: np.ndarray) -> None:
        """``ids``: the documents' tokens back to back; ``lengths``: tokens per document."""
        ids = np.ascontiguousarray(ids, dtype=self.dtype)
        lengths = np.ascontiguousarray(lengths, dtype=np.int32)
        self._bin.write(memoryview(ids).cast("B"))
        self._lengths.write(memoryview(lengths).cast("B"))
        self.sequences += len(lengths)
        self.tokens += len(ids)

    def finish(self) -> None:
        """Close the .bin, write the .idx (both still under temporary names), fsync both."""
        self._bin.flush()
        os.fsync(self._bin.fileno())
        self._bin.close()
        self._lengths.close()
        n = self.sequences
        itemsize = self.dtype.itemsize
        with open(self.idx_tmp, "wb") as idx, open(self.lengths_tmp, "rb") as lengths:
            idx.write(INDEX_HEADER)
            idx.write(struct.pack("<Q", INDEX_VERSION))
            idx.write(struct.pack("<B", DTYPE_CODES[self.dtype]))
            idx.write(struct.pack("<Q", n))
            idx.write(struct.pack("<Q", n + 1))
            # int32 lengths, copied as written
            while chunk := lengths.read(CHUNK * 4):
                idx.write(chunk)
            # int64 byte offset of each sequence in the .bin
            lengths.seek(0)
            offset = 0
            while chunk := lengths.read(CHUNK * 4):
                sizes = np.frombuffer(chunk, dtype=np.int32).astype(np.int64) * itemsize
                ends = np.cumsum(sizes) + offset
                idx.write((ends - sizes).tobytes())
                offset = int(ends[-1])
            # int64 document indices: document i is sequences [i, i+1)
            for start in range(0, n + 1, CHUNK):
                idx.write(np.arange(start, min(n + 1, start + CHUNK), dtype=np.int64).tobytes())
            idx.flush()
            os.fsync(idx.fileno())
        self.lengths_tmp.unlink()

    def discard(self) -> None:
        for f in (self._bin, self._lengths):
            if not f.closed:
                f.close()
        for p in (self.bin_tmp, self.idx_tmp, self.lengths_tmp):
            p.unlink(missing_ok=True)

    @property
    def bytes_written(self) -> int:
        return self.tokens * self.dtype.itemsize


def publish(writers: list[IndexedDatasetWriter]) -> None:
    """Rename every finished writer's files onto their final names.

    Old indexes go first and new indexes last: a kill in between leaves .bin files without an
    .idx (no dataset) rather than a new .bin beside an old .idx."""
    for w in writers:
        w.idx_path.unlink(missing_ok=True)
    for w in writers:
        os.replace(w.bin_tmp, w.bin_path)
    for w in writers:
        os.replace(w.idx_tmp, w.idx_path)
    for parent in {w.idx_path.parent for w in writers}:
        fsync_dir(parent)
