"""Raw datasets read as a stream of bounded batches of rows: parquet, jsonl(.gz), json, csv, txt.

Every row keeps its number in its file (the line for jsonl/csv/txt, the record for json/parquet)
so that a bad one can be reported where a user can find it. Memory is bounded by the batch size,
never by the file size.
"""

from __future__ import annotations

import csv
import glob
import gzip
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from llm.errors import NpuboxError
from llm.regular_file import open_regular, require_regular

FORMATS = ("parquet", "jsonl", "json", "csv", "txt")
SUFFIXES = {
    ".parquet": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".txt": "txt",
    ".text": "txt",
}
BATCH_ROWS = 2048
BATCH_BYTES = 1 << 20
MAX_JSON_RECORD = 256 << 20  # one element of a .json array larger than this is not a row

MAX_DOCUMENT_BYTES = 16 << 20  # a row larger than this is skipped: tokenizing it takes ~150 times its size in memory

UNDECODABLE = object()  # placeholder for a row that is not valid UTF-8 / JSON


@dataclass(frozen=True)
class TooLarge:
    """Placeholder for a line longer than the document cap: it is skipped, never held in memory whole."""

    size: int  # bytes, at least


@dataclass
class Batch:
    path: Path
    unit: str  # what the row numbers count: "line" or "record"
    numbers: list[int] = field(default_factory=list)
    rows: list[Any] = field(default_factory=list)  # dict per row, or UNDECODABLE
    consumed: int = 0  # bytes of the file (compressed, as on disk) read so far


def format_of(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    fmt = SUFFIXES.get(suffixes[-1]) if suffixes else None
    if fmt is None:
        raise NpuboxError(
            f"input {path}: cannot tell its format from the name; expected one of "
            ".parquet, .jsonl, .jsonl.gz, .json, .csv, .txt"
        )
    if fmt == "parquet" and path.suffix.lower() == ".gz":
        raise NpuboxError(f"input {path}: parquet compresses itself; expected a plain .parquet file")
    return fmt


def expand_inputs(specs: list[str]) -> list[Path]:
    """Files, directories (every file in it, all of one format) and globs, in a stable order."""
    paths: list[Path] = []
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
            if not files:
                raise NpuboxError(f"input directory {p} has no files")
            formats = {format_of(f) for f in files}
            if len(formats) > 1:
                raise NpuboxError(
                    f"input directory {p} mixes formats ({', '.join(sorted(formats))}); expected files of one format"
                )
            paths += files
        elif p.exists() or p.is_symlink():
            paths.append(require_regular(p, "a dataset file (.parquet, .jsonl, .json, .csv, .txt)"))
        elif glob.has_magic(spec):
            matches = sorted(Path(m) for m in glob.glob(spec, recursive=True) if Path(m).is_file())
            if not matches:
                raise NpuboxError(f"input pattern {spec!r} matches no file")
            paths += matches
        else:
            raise NpuboxError(f"input {spec} does not exist")
    for p in paths:
        format_of(p)
        if not os.access(p, os.R_OK):
            raise NpuboxError(f"input {p} is not readable by this user (uid {os.getuid()})")
    return paths


def open_binary(path: Path) -> tuple[BinaryIO, BinaryIO]:
    """(stream to read, raw file whose position says how far we are)."""
    raw = open_regular(path, "a dataset file")
    if path.suffix.lower() == ".gz":
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw
    return raw, raw


def read_batches(path: Path, columns: list[str], max_row_bytes: int = MAX_DOCUMENT_BYTES) -> Iterator[Batch]:
    fmt = format_of(path)
    try:
        if fmt == "parquet":
            yield from _parquet(path, columns)
        elif fmt == "csv":
            yield from _csv(path)
        elif fmt == "json":
            yield from _json(path, max_row_bytes)
        else:
            yield from _lines(path, fmt, max_row_bytes)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise NpuboxError(f"input {path}: cannot be read ({e})") from e


def _read_line(stream: BinaryIO, limit: int) -> tuple[bytes, int]:
    """The next line, or b"" at the end; a line longer than ``limit`` bytes is read past in bounded
    pieces and returned empty with its size, so that no line is ever held whole beyond the limit."""
    line = stream.readline(limit + 1)
    if len(line) <= limit or line.endswith(b"\n"):
        return line, len(line)
    size = len(line)
    while True:
        piece = stream.readline(1 << 20)
        size += len(piece)
        if not piece or piece.endswith(b"\n"):
            return b"", size


def _lines(path: Path, fmt: str, max_row_bytes: int = MAX_DOCUMENT_BYTES) -> Iterator[Batch]:
    """jsonl: one JSON object per line; txt: each line is a document {"text": line}."""
    stream, raw = open_binary(path)
    with raw, stream:
        batch, size = Batch(path, "line"), 0
        number = 0
        while True:
            line, length = _read_line(stream, max_row_bytes)
            if not length:
                break
            number += 1
            if not line:
                row: Any = TooLarge(length)
            elif fmt == "txt":
                try:
                    row = {"text": line.decode("utf-8").rstrip("\r\n")}
                except UnicodeDecodeError:
                    row = UNDECODABLE
            else:
                if not line.strip():
                    continue  # blank lines separate nothing in JSON Lines
                try:
                    row = json.loads(line.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    row = UNDECODABLE
                if not isinstance(row, dict):
                    row = UNDECODABLE
            batch.numbers.append(number)
            batch.rows.append(row)
            size += len(line)
            if len(batch.rows) >= BATCH_ROWS or size >= BATCH_BYTES:
                batch.consumed = raw.tell()
                yield batch
                batch, size = Batch(path, "line"), 0
        if batch.rows:
            batch.consumed = raw.tell()
            yield batch


def _csv(path: Path) -> Iterator[Batch]:
    """CSV with a header row; undecodable bytes are kept as surrogates and the row reported."""
    stream, raw = open_binary(path)
    with raw, stream:
        text = io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape", newline="")
        reader = csv.DictReader(text)
        batch, size = Batch(path, "line"), 0
        try:
            for row in reader:
                values = [v for v in row.values() if isinstance(v, str)]
                bad = None in row or any(not _is_utf8(v) for v in values)
                batch.numbers.append(reader.line_num)
                batch.rows.append(UNDECODABLE if bad else row)
                size += sum(map(len, values))
                if len(batch.rows) >= BATCH_ROWS or size >= BATCH_BYTES:
                    batch.consumed = raw.tell()
                    yield batch
                    batch, size = Batch(path, "line"), 0
        except csv.Error as e:
            raise NpuboxError(f"input {path}: line {reader.line_num} is not valid CSV ({e})") from e
        if batch.rows:
            batch.consumed = raw.tell()
            yield batch


def _is_utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _json(path: Path, max_row_bytes: int = MAX_DOCUMENT_BYTES) -> Iterator[Batch]:
    """A JSON array of objects, decoded element by element; a file that is not an array is read as JSON Lines.
    (An array's record is decoded whole, up to MAX_JSON_RECORD; the handler skips texts over the cap.)"""
    stream, raw = open_binary(path)
    with raw, stream:
        text = io.TextIOWrapper(stream, encoding="utf-8", errors="strict")
        decoder = json.JSONDecoder()
        try:
            buf = text.read(1 << 16).lstrip()
        except UnicodeDecodeError as e:
            raise NpuboxError(f"input {path}: not UTF-8 ({e})") from e
        if not buf.startswith("["):
            stream.close()
            raw.close()
            yield from _lines(path, "jsonl", max_row_bytes)
            return
        pos, eof, number = 1, False, 0
        batch, size = Batch(path, "record"), 0
        while True:
            # skip separators between elements
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n,":
                    pos += 1
                if pos < len(buf) or eof:
                    break
                buf, pos, eof = _refill(text, buf, pos, path)
            if pos >= len(buf):
                raise NpuboxError(f"input {path}: the JSON array is not closed with ']'")
            if buf[pos] == "]":
                break
            try:
                row, end = decoder.raw_decode(buf, pos)
                if end == len(buf) and not eof:  # a number cut by the buffer's end also decodes
                    raise json.JSONDecodeError("truncated", buf, end)
            except json.JSONDecodeError as e:
                if eof:
                    raise NpuboxError(f"input {path}: record {number + 1} is not valid JSON ({e.msg})") from e
                if len(buf) - pos > MAX_JSON_RECORD:
                    raise NpuboxError(
                        f"input {path}: record {number + 1} is larger than {MAX_JSON_RECORD} bytes"
                    ) from e
                buf, pos, eof = _refill(text, buf, pos, path)
                continue
            number += 1
            batch.numbers.append(number)
            batch.rows.append(row if isinstance(row, dict) else UNDECODABLE)
            size += end - pos
            pos = end
            if len(batch.rows) >= BATCH_ROWS or size >= BATCH_BYTES:
                batch.consumed = raw.tell()
                yield batch
                batch, size = Batch(path, "record"), 0
        if batch.rows:
            batch.consumed = raw.tell()
            yield batch


def _refill(text: io.TextIOWrapper, buf: str, pos: int, path: Path) -> tuple[str, int, bool]:
    try:
        more = text.read(1 << 20)
    except UnicodeDecodeError as e:
        raise NpuboxError(f"input {path}: not UTF-8 ({e})") from e
    return buf[pos:] + more, 0, not more


def _parquet(path: Path, columns: list[str]) -> Iterator[Batch]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid and friends
        raise NpuboxError(f"input {path}: not a readable parquet file ({e})") from e
    present = [c for c in columns if c in pf.schema_arrow.names]
    total_rows = max(pf.metadata.num_rows, 1)
    file_size = path.stat().st_size
    number = 0
    for record_batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=present or None):
        rows = record_batch.select(present).to_pylist() if present else [{}] * record_batch.num_rows
        batch = Batch(path, "record", list(range(number + 1, number + 1 + len(rows))), rows)
        number += len(rows)
        batch.consumed = file_size * number // total_rows
        yield batch
