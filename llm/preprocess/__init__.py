"""`python -m llm preprocess`: raw datasets -> Megatron indexed datasets, streaming, at the tokenizer's speed.

    python -m llm preprocess --model tiny         # the sample corpus, with the recipe's defaults
    python -m llm preprocess --input data/*.parquet --tokenizer models/qwen25-7b/hf \\
        --output-prefix data/qwen25-7b/alpaca --append-eod

Pretraining text -> ``PREFIX_<key>_document.{bin,idx}``; instruction data (``--handler alpaca`` or
``sharegpt``) -> ``PREFIX_packed_{input_ids,attention_mask,labels}_document.{bin,idx}``. Every file is
written under a temporary name and renamed only when the whole run has succeeded.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
import threading
import time
from pathlib import Path

from llm.errors import NpuboxError
from llm.preprocess.readers import MAX_DOCUMENT_BYTES
from llm.target_lock import lock_target

HANDLERS = ("pretrain", "alpaca", "sharegpt")


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m llm preprocess",
        description="Tokenize raw datasets (parquet, jsonl, jsonl.gz, json, csv, txt) into Megatron indexed datasets "
        "(.bin/.idx) that megatron-core's IndexedDataset and GPTDataset read. Bad rows are skipped and reported.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--model",
        help="recipe name: fills --input (workspace data/raw/sample.jsonl, or "
        "sample_alpaca.jsonl for --handler alpaca), --tokenizer (models/<model>/hf), --output-prefix "
        "(data/<model>/sample), --append-eod (on) and, for instruction data, --seq-length (the recipe's)",
    )
    p.add_argument("--input", nargs="+", metavar="PATH", help="files, directories (every file, one format) or globs")
    p.add_argument("--tokenizer", metavar="DIR", help="Hugging Face model directory with tokenizer.json")
    p.add_argument("--output-prefix", metavar="PREFIX", help="output path prefix, e.g. data/qwen/alpaca")
    p.add_argument(
        "--handler",
        choices=HANDLERS,
        help="pretrain: plain text; alpaca: instruction/input/output rows; sharegpt: conversations (default: "
        "pretrain; alpaca for --format mindrecord, as the guides train)",
    )
    p.add_argument(
        "--json-keys",
        nargs="+",
        default=["text"],
        metavar="KEY",
        help="pretrain: the fields to tokenize, one output dataset per key",
    )
    p.add_argument(
        "--append-eod",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="append the end-of-document token (the tokenizer's eos) to every document "
        "(default: on with --model, off otherwise)",
    )
    p.add_argument(
        "--workers", type=int, default=default_workers(), help="tokenizer threads (the Rust tokenizer's thread pool)"
    )
    p.add_argument(
        "--seq-length",
        type=int,
        default=None,
        help="instruction data: truncate samples to this many tokens and pack them into sequences of "
        "exactly this length",
    )
    p.add_argument(
        "--no-pack",
        dest="pack",
        action="store_false",
        help="instruction data with --seq-length: truncate only, one sample per sequence, no padding",
    )
    p.add_argument("--prompt-type", default="qwen", choices=["qwen"], help="chat template for instruction data")
    p.add_argument(
        "--max-document-mb",
        type=float,
        default=MAX_DOCUMENT_BYTES >> 20,
        help="skip (and count) a document larger than this: tokenizing one takes about 150 times its size in memory",
    )
    p.add_argument(
        "--format",
        choices=("megatron", "mindrecord"),
        help="megatron: indexed datasets (.bin/.idx); mindrecord: MindFormers' MindRecord, written by the stack's own "
        "scripts into data/<model>/alpaca-mindrecord (alpaca) or text-mindrecord (default: mindrecord on a "
        "MindFormers image, else megatron)",
    )
    p.add_argument("--stack", help="--format mindrecord: MindFormers source commit (default: the image's spec)")
    p.add_argument("--source-dir", type=Path, help="--format mindrecord: MindFormers source tree (default: image's)")
    p.add_argument("--device-target", choices=("Ascend", "CPU"), help=argparse.SUPPRESS)
    p.add_argument("--strict", action="store_true", help="a bad row is an error instead of being skipped")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def resolve_defaults(args: argparse.Namespace) -> None:
    if args.model:
        from llm.recipes import load_recipe
        from llm.workspace import Workspace

        recipe = load_recipe(args.model)
        ws = Workspace.from_env()
        sample = "sample_alpaca.jsonl" if args.handler == "alpaca" else "sample.jsonl"
        if not args.input:
            args.input = [str(ws.raw_data() / sample)]
            if not Path(args.input[0]).exists() and recipe.tokenizer.origin == "sample":
                raise NpuboxError(
                    f"{args.input[0]} does not exist; make it with `python -m llm sample --model {args.model}`"
                )
        args.tokenizer = args.tokenizer or str(ws.hf_dir(args.model))
        args.output_prefix = args.output_prefix or str(ws.dataset_prefix(args.model, "sample"))
        args.append_eod = True if args.append_eod is None else args.append_eod
        if args.handler != "pretrain" and args.seq_length is None:
            args.seq_length = recipe.defaults("pretrain").seq_length
    missing = [
        flag
        for flag, value in (
            ("--input", args.input),
            ("--tokenizer", args.tokenizer),
            ("--output-prefix", args.output_prefix),
        )
        if not value
    ]
    if missing:
        raise NpuboxError(f"{', '.join(missing)} not given; pass them, or --model M to use the workspace defaults")
    if args.workers < 1:
        raise NpuboxError(f"--workers is {args.workers}; expected 1 or more")
    if args.workers > default_workers():
        # More tokenizer threads than cores only contend: 10000 on 2 cores ran about 1000 times slower.
        print(
            f"preprocess: --workers {args.workers} is more than the {default_workers()} cores this process may use; "
            f"using {default_workers()}",
            file=sys.stderr,
        )
        args.workers = default_workers()
    if args.seq_length is not None and args.seq_length < 2:
        raise NpuboxError(f"--seq-length is {args.seq_length}; expected 2 or more")
    if not args.max_document_mb > 0:
        raise NpuboxError(f"--max-document-mb is {args.max_document_mb}; expected a positive size")


def check_output_dir(prefix: Path) -> None:
    try:
        prefix.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise NpuboxError(f"output directory {prefix.parent} cannot be created ({e.strerror})") from e
    if not os.access(prefix.parent, os.W_OK | os.X_OK):
        raise NpuboxError(f"output directory {prefix.parent} is not writable by this user (uid {os.getuid()})")


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _exit_on_sigterm(signum, frame):
    # `docker stop` sends SIGTERM: unwind so the temporary files are removed (SIGKILL leaves them for the next run).
    raise SystemExit(128 + signum)


def open_writers(prefix: Path, names: list[str], dtype) -> dict:
    """One writer per output dataset ``PREFIX_<name>``, after removing what a killed run left behind."""
    from llm.atomic import remove_leftovers
    from llm.preprocess.indexed_writer import IndexedDatasetWriter

    writers: dict[str, IndexedDatasetWriter] = {}
    try:
        for name in names:
            dataset = prefix.with_name(f"{prefix.name}_{name}")
            for final in (dataset.with_name(dataset.name + ".bin"), dataset.with_name(dataset.name + ".idx")):
                remove_leftovers(final, "run")
            writers[name] = IndexedDatasetWriter(dataset, dtype)
    except OSError as e:
        for w in writers.values():
            w.discard()
        raise NpuboxError(f"output prefix {prefix}: cannot create files there ({e})") from e
    return writers


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.format is None:
        from llm.runtime_report import baked_engine

        args.format = "mindrecord" if baked_engine() == "mindformers" else "megatron"
    if args.format == "mindrecord":
        from llm.mindformers.preprocess import main as mindrecord_main

        args.handler = args.handler or "alpaca"
        return mindrecord_main(args)
    args.handler = args.handler or "pretrain"
    resolve_defaults(args)
    # The Rust tokenizer sizes its thread pool from these on first use.
    os.environ["RAYON_NUM_THREADS"] = str(args.workers)
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if args.workers > 1 else "false"

    from llm.preprocess.handlers import InstructionHandler, PretrainHandler
    from llm.preprocess.readers import expand_inputs
    from llm.tokenizer import load_tokenizer

    # Everything that can be wrong with the inputs is found before any work.
    paths = expand_inputs(args.input)
    tok = load_tokenizer(Path(args.tokenizer))
    max_bytes = int(args.max_document_mb * 2**20)
    if args.handler == "pretrain":
        handler = PretrainHandler(tok, args.json_keys, bool(args.append_eod), max_bytes)
    else:
        handler = InstructionHandler(tok, args.handler, args.prompt_type, args.seq_length, args.pack, max_bytes)
    prefix = Path(args.output_prefix)
    check_output_dir(prefix)
    with lock_target(prefix, f"--output-prefix {prefix}"):
        return write_datasets(args, paths, handler, prefix)


def nothing_written(args: argparse.Namespace, skips, handler) -> NpuboxError:
    inputs = ", ".join(map(str, args.input))
    if not skips.total:
        return NpuboxError(f"the input {inputs} holds no rows")
    reasons = "; ".join(f"{count} × {reason}" for reason, count in skips.counts.most_common(3))
    hint = ""
    if any(reason.startswith("missing key") for reason in skips.counts) and handler.keys_seen:
        hint = f"; the rows have the keys {', '.join(sorted(handler.keys_seen))}: name the text's key with --json-keys"
    return NpuboxError(f"no document was written: all {skips.total} rows of {inputs} were skipped ({reasons}){hint}")


def write_datasets(args: argparse.Namespace, paths: list[Path], handler, prefix: Path) -> int:
    """Tokenize every input into the prefix's datasets (the prefix's lock held)."""
    from llm.preprocess.indexed_writer import publish
    from llm.preprocess.pipeline import run
    from llm.preprocess.report import Progress, SkipReport

    writers = open_writers(prefix, handler.outputs, handler.dtype)
    skips = SkipReport(args.strict)
    progress = Progress(sum(p.stat().st_size for p in paths), enabled=not args.quiet)
    start = time.monotonic()
    previous_sigterm = signal.signal(signal.SIGTERM, _exit_on_sigterm) if _in_main_thread() else None
    try:
        summary = run(paths, handler, writers, skips, progress)
        progress.close()
        if summary.sequences == 0:
            raise nothing_written(args, skips, handler)
        for w in writers.values():
            w.finish()
        publish(list(writers.values()))
        summary.seconds = time.monotonic() - start
        summary.input_bytes = sum(p.stat().st_size for p in paths)
    except BaseException as e:
        progress.close()
        for w in writers.values():
            w.discard()
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise NpuboxError(
                f"no space left on {prefix.parent} while writing {prefix}_*: free some space or choose another "
                "--output-prefix; the partial files were removed"
            ) from None
        raise
    finally:
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)

    summary.bytes_written = sum(w.bytes_written + w.idx_path.stat().st_size for w in writers.values())
    summary.outputs = [w.bin_path.with_suffix("") for w in writers.values()]
    print(
        f"preprocess: {len(paths)} file(s) -> {prefix}_*  (handler {args.handler}, {args.workers} workers, "
        f"tokens {handler.dtype.name})"
    )
    print("\n".join(summary.lines(skips)))
    return 0
