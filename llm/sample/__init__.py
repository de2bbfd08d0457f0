"""`python -m llm sample --model tiny`: the tiny model's corpus, tokenizer and HF weights, made locally.

Writes, under the workspace:
    data/raw/sample.jsonl           {"text": ...} per stdlib docstring (pretraining sample)
    data/raw/sample_alpaca.jsonl    {"instruction", "input", "output"} made from the same docstrings
    models/<model>/hf/              tokenizer.json + tokenizer_config.json, vocab.json + merges.txt (byte-level BPE,
                                    Qwen2 rules),
                                    config.json + model.safetensors (random weights of the recipe's shape)
No network; the same interpreter and inputs give the same bytes on every run.
"""

from __future__ import annotations

import argparse
import time

from llm.atomic import atomic_dir, atomic_path
from llm.errors import NpuboxError
from llm.recipes import load_recipe
from llm.sample.bpe_tokenizer import save_tokenizer, train_tokenizer, with_special_ids_from
from llm.sample.corpus import alpaca_lines, pretrain_lines, stdlib_docstrings
from llm.workspace import Workspace


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m llm sample",
        description="Make a tiny model's sample corpus (the Python standard library's docstrings), its byte-level "
        "BPE tokenizer and its HF weights in the workspace, without network.",
    )
    p.add_argument("--model", default="tiny", help="recipe whose tokenizer origin is 'sample' (default: tiny)")
    return p


def write_lines(path, lines) -> int:
    count = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(line + "\n")
            count += 1
    return count


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    recipe = load_recipe(args.model)
    if recipe.tokenizer.origin != "sample" or not recipe.tokenizer.vocab_size:
        raise NpuboxError(
            f"recipe {args.model!r}: field `tokenizer.origin` is {recipe.tokenizer.origin!r}; `llm sample` makes "
            "tokenizers only for recipes with origin 'sample' and a tokenizer.vocab_size"
        )
    ws = Workspace.from_env()
    start = time.monotonic()

    docs = list(stdlib_docstrings())
    raw = ws.raw_data()
    n_text = write_lines(raw / "sample.jsonl", pretrain_lines(docs))
    n_alpaca = write_lines(raw / "sample_alpaca.jsonl", alpaca_lines(docs))
    print(
        f"corpus: {n_text} documents -> {raw / 'sample.jsonl'}; "
        f"{n_alpaca} instructions -> {raw / 'sample_alpaca.jsonl'}"
    )

    hf_dir = ws.hf_dir(args.model)
    with atomic_dir(hf_dir) as tmp:
        tok = train_tokenizer((d.text for d in docs), recipe.tokenizer.vocab_size)
        if recipe.tokenizer.special_ids_from is not None:
            tok = with_special_ids_from(tok, recipe.tokenizer.special_ids_from)
        tokenizer_class = "Qwen2Tokenizer" if recipe.family == "qwen2" else "PreTrainedTokenizerFast"
        save_tokenizer(
            tok, tmp, model_max_length=recipe.architecture.max_position_embeddings, tokenizer_class=tokenizer_class
        )
        print(f"tokenizer: byte-level BPE, {tok.get_vocab_size()} tokens")
        from llm.sample.weights import write_sample_weights

        write_sample_weights(recipe, tmp, seed=0)
        print("weights: config.json + model.safetensors")
    print(f"-> {hf_dir}  ({time.monotonic() - start:.1f}s)")
    return 0
