"""`python -m llm preprocess --format mindrecord` (the default on a MindFormers image): alpaca or plain text →
MindRecord with the release's own scripts, as its guide runs them.

- ``--handler alpaca``: the guide's ``alpaca_converter.py --data_path ALPACA.json --output_path MESSAGES.json``,
  then ``qwen2_preprocess.py`` (``qwen2_5_preprocess.py``) ``--dataset_type qa --input_glob MESSAGES.json
  --vocab_file V --merges_file M --seq_length S --output_file X.mindrecord``;
- ``--handler pretrain``: the same preprocess script with ``--dataset_type wiki`` on the documents as one text file.

The output is one folder (default ``data/<model>/alpaca-mindrecord``: the ``.mindrecord`` file and its ``.db``
index), which MindFormers' ``dataset_dir`` reads; it is written beside its place and swapped in whole. The alpaca
converter reads a JSON array: an input in JSON Lines (what ``llm sample`` writes) is rewritten as one first, record
for record. ``--seq-length`` defaults to the sequence length of the yaml the engine trains with."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llm.atomic import atomic_dir, remove_leftovers
from llm.errors import NpuboxError
from llm.mindformers.stack import resolve_stack, run_script
from llm.target_lock import lock_target
from llm.workspace import Workspace

OUTPUT = {
    "alpaca": ("alpaca-mindrecord", "alpaca-messages.mindrecord"),
    "pretrain": ("text-mindrecord", "text.mindrecord"),
}


def guide_seq_length(stack, model: str, recipe) -> int:
    from llm.mindformers.guides import config_for
    from llm.pretrain.mindformers.yaml_config import get_path, load_guide_yaml

    if recipe.tiny:
        return recipe.defaults("pretrain").seq_length
    base = load_guide_yaml(stack.source_dir / stack.guide.workdir / config_for(stack.guide, model))
    return int(get_path(base, "model.model_config.seq_length"))


def read_records(path: Path) -> list[dict]:
    """A file's records: a JSON array, or one JSON object a line (JSON Lines)."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix == ".json":
        chunks = [(0, text)]
    else:
        chunks = [(n, line) for n, line in enumerate(text.splitlines()) if line.strip()]
    records = []
    for offset, chunk in chunks:
        try:
            data = json.loads(chunk)
        except json.JSONDecodeError as e:
            raise NpuboxError(f"{path}: line {offset + e.lineno}, column {e.colno}: not JSON ({e.msg})") from None
        records += data if path.suffix == ".json" and isinstance(data, list) else [data]
    bad = next((i for i, r in enumerate(records) if not isinstance(r, dict)), None)
    if bad is not None:
        raise NpuboxError(f"{path}: record {bad + 1} is not a JSON object; expected one record (an object) each")
    return records


def main(args: argparse.Namespace) -> int:
    """``llm preprocess`` with ``--format mindrecord`` (the preprocess parser's namespace)."""
    from llm.recipes import load_recipe

    if args.handler not in OUTPUT:
        raise NpuboxError(f"--handler {args.handler}: MindFormers' preprocess scripts take alpaca or pretrain text")
    if not args.model:
        raise NpuboxError("--format mindrecord needs --model (its recipe names the guide's yaml and tokenizer)")
    recipe = load_recipe(args.model)
    ws = Workspace.from_env()
    stack = resolve_stack(args)
    folder, name = OUTPUT[args.handler]
    out_dir = Path(args.output_prefix) if args.output_prefix else ws.data / args.model / folder
    source = (
        Path(args.input[0])
        if args.input
        else ws.raw_data() / ("sample_alpaca.jsonl" if args.handler == "alpaca" else "sample.jsonl")
    )
    if args.input and len(args.input) > 1:
        raise NpuboxError("--format mindrecord reads one --input file (the guide's scripts take one)")
    if not source.is_file():
        raise NpuboxError(f"--input {source}: not a file")
    tokenizer = Path(args.tokenizer) if args.tokenizer else ws.hf_dir(args.model)
    for needed in ("vocab.json", "merges.txt"):
        if not (tokenizer / needed).is_file():
            raise NpuboxError(f"--tokenizer {tokenizer}: no {needed}, which MindFormers' Qwen2Tokenizer reads")
    seq = args.seq_length or guide_seq_length(stack, args.model, recipe)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with lock_target(out_dir, f"--output-prefix {out_dir}"):
        remove_leftovers(out_dir, "preprocess")
        with atomic_dir(out_dir) as tmp:
            work = tmp / ".npubox-inputs"
            work.mkdir()
            common = ["--vocab_file", str(tokenizer / "vocab.json"), "--merges_file", str(tokenizer / "merges.txt")]
            common += ["--seq_length", str(seq), "--output_file", str(tmp / name)]
            if args.handler == "alpaca":
                alpaca = work / "alpaca.json"
                alpaca.write_text(json.dumps(read_records(source), ensure_ascii=False), encoding="utf-8")
                messages = work / "messages.json"
                run_script(
                    stack,
                    [stack.guide.alpaca_converter, "--data_path", str(alpaca), "--output_path", str(messages)],
                    "converting alpaca records to chat messages",
                )
                script = [stack.guide.preprocess_script, "--dataset_type", "qa", "--input_glob", str(messages)]
            else:
                text = work / "text.txt"
                docs = [r.get(args.json_keys[0], "") for r in read_records(source)]
                text.write_text("\n\n".join(d for d in docs if d), encoding="utf-8")
                script = [stack.guide.preprocess_script, "--dataset_type", "wiki", "--input_glob", str(text)]
            run_script(stack, [*script, *common], "writing MindRecord", cwd=stack.source_dir)
            for path in work.iterdir():
                path.unlink()
            work.rmdir()
            if not (tmp / name).is_file():
                raise NpuboxError(f"{stack.guide.preprocess_script} finished but wrote no {name}; its output is above")
    print(f"preprocessed {source} -> {out_dir} (MindRecord, seq_length {seq}, {args.handler})")
    return 0
