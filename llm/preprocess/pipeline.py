"""The preprocessing loop: read a batch, hand the previous one's tokenization to a worker thread, write in order.

The tokenizer's Rust ``encode_batch_fast`` spreads one batch over ``--workers`` threads and releases
the GIL, so the main thread reads and checks batch k+1 (JSON parsing, field checks) while batch k
is being tokenized; writing is appending numpy buffers to files. Only two batches are in flight,
so memory does not grow with the input.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from llm.preprocess.indexed_writer import IndexedDatasetWriter
from llm.preprocess.readers import read_batches
from llm.preprocess.report import Progress, SkipReport, Summary

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


def return_freed_memory_to_the_system() -> None:
    """Keep peak RSS flat however long the input.

    Each batch's Encodings are large and freed on other threads (the tokenizer's pool); with glibc's
    default, adaptive thresholds those frees stay in the process's arenas and RSS creeps up with the
    input (276 -> 347 MB from 50 MB to 500 MB of input). Fixed thresholds hand them back."""
    libc_name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(libc_name)
        libc.mallopt(M_MMAP_THRESHOLD, 128 << 10)
        libc.mallopt(M_TRIM_THRESHOLD, 128 << 10)
    except (OSError, AttributeError, TypeError):  # not glibc: nothing to tune
        pass


def run(
    paths: list[Path],
    handler,
    writers: dict[str, IndexedDatasetWriter],
    skips: SkipReport,
    progress: Progress,
) -> Summary:
    return_freed_memory_to_the_system()
    summary = Summary()

    def write(arrays) -> None:
        for name, (ids, lengths) in arrays.items():
            writers[name].add_documents(ids, lengths)
        first = writers[handler.outputs[0]]
        summary.tokens, summary.sequences = first.tokens, first.sequences

    finished_bytes = 0  # input files already read completely
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenize") as pool:
        pending: Future | None = None
        for path in paths:
            for batch in read_batches(path, handler.columns, handler.max_document_bytes):
                future = pool.submit(handler.encode, handler.prepare(batch, skips))
                if pending is not None:
                    write(handler.emit(pending.result(), skips, summary))
                pending = future
                progress.update(finished_bytes + batch.consumed, summary.documents, summary.tokens)
            finished_bytes += path.stat().st_size
        if pending is not None:
            write(handler.emit(pending.result(), skips, summary))
        write(handler.flush(summary))
    progress.update(finished_bytes, summary.documents, summary.tokens)
    return summary
