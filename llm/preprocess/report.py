"""What a run tells its user: skipped rows by reason, a live progress bar, the closing summary."""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from llm.errors import NpuboxError

EXAMPLES_PER_REASON = 5


class SkipReport:
    """Counts bad rows by reason and keeps the first few places; with ``strict`` the first one is an error."""

    def __init__(self, strict: bool):
        self.strict = strict
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}

    def skip(self, path: Path, unit: str, number: int, reason: str) -> None:
        where = f"{path} {unit} {number}"
        if self.strict:
            raise NpuboxError(f"{where}: {reason} (--strict makes every bad row an error; leave it out to skip them)")
        self.counts[reason] += 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < EXAMPLES_PER_REASON:
            examples.append(f"{path.name} {unit} {number}")

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def lines(self) -> list[str]:
        out = []
        for reason, count in self.counts.most_common():
            more = ", ..." if count > len(self.examples[reason]) else ""
            out.append(f"  {count} × {reason}: {', '.join(self.examples[reason])}{more}")
        return out


@dataclass
class Summary:
    documents: int = 0  # input documents turned into sequences
    tokens: int = 0  # tokens written (per output file, the first)
    input_bytes: int = 0  # of the input files, as on disk
    truncated: int = 0
    sequences: int = 0  # sequences written (differs from documents when packing)
    bytes_written: int = 0
    seconds: float = 0.0
    outputs: list[Path] = field(default_factory=list)

    def lines(self, skips: SkipReport) -> list[str]:
        rate = max(self.seconds, 1e-9)
        out = [
            f"documents: {self.documents:,}  sequences: {self.sequences:,}  tokens: {self.tokens:,}",
            f"time: {self.seconds:.1f}s  ({self.documents / rate:,.0f} docs/s, {self.tokens / rate:,.0f} tokens/s, "
            f"{self.input_bytes / rate / 1e6:.1f} MB/s of input)",
            f"written: {self.bytes_written:,} bytes",
        ]
        if self.truncated:
            out.append(f"truncated to --seq-length: {self.truncated:,}")
        out.append(f"skipped rows: {skips.total:,}")
        out += skips.lines()
        out += [f"  -> {p}" for p in self.outputs]
        return out


class Progress:
    """rich progress bar on a terminal (docs/s, tokens/s, ETA by input bytes); a log line every 30 s otherwise."""

    def __init__(self, total_bytes: int, enabled: bool = True):
        from rich.console import Console
        from rich.progress import BarColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        self.console = Console(file=sys.stderr)
        self.enabled = enabled
        self.start = time.monotonic()
        self.last_log = self.start
        self.bar = None
        if enabled and self.console.is_terminal:
            self.bar = RichProgress(
                TextColumn("[bold]preprocess"),
                BarColumn(),
                TextColumn("{task.percentage:>5.1f}%"),
                TextColumn("{task.fields[rates]}"),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self.task = self.bar.add_task("preprocess", total=max(total_bytes, 1), rates="")
            self.bar.start()
        self.total_bytes = total_bytes

    def update(self, done_bytes: int, documents: int, tokens: int) -> None:
        now = time.monotonic()
        elapsed = max(now - self.start, 1e-9)
        rates = f"{documents / elapsed:,.0f} docs/s  {tokens / elapsed:,.0f} tokens/s"
        if self.bar is not None:
            self.bar.update(self.task, completed=done_bytes, rates=rates)
        elif self.enabled and now - self.last_log >= 30:
            self.last_log = now
            pct = 100 * done_bytes / max(self.total_bytes, 1)
            print(f"preprocess: {pct:.1f}%  {documents:,} docs  {rates}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
