"""`python -m llm recipe list | show M | check --model M --hf-config config.json`."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from llm.recipes import load_recipe, recipe_names
from llm.recipes.hfconfig import disagreements, read_hf_config


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m llm recipe", description="Model recipes: architecture and default parallelism."
    )
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="one line per recipe: name, family, layers, hidden size, default TP/PP")
    show = sub.add_parser("show", help="print one recipe as YAML, with its padded vocabulary per phase's TP")
    show.add_argument("model", help="recipe name (see `list`)")
    check = sub.add_parser("check", help="compare a recipe with a Hugging Face config.json; exit 1 on any disagreement")
    check.add_argument("--model", required=True, help="recipe name")
    check.add_argument(
        "--hf-config", required=True, type=Path, help="path to config.json (or the HF directory holding it)"
    )
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "list":
        for name in recipe_names():
            r = load_recipe(name)
            a, c = r.architecture, r.defaults("convert")
            print(f"{name:<14} {r.family:<6} layers={a.num_layers:<3} hidden={a.hidden_size:<5} tp={c.tp} pp={c.pp}")
        return 0
    if args.command == "show":
        r = load_recipe(args.model)
        print(yaml.safe_dump(r.model_dump(), sort_keys=False), end="")
        for phase in ("convert", "pretrain", "eval"):
            tp = r.defaults(phase).tp
            print(f"# {phase}: padded_vocab_size(tp={tp}) = {r.architecture.padded_vocab_size(tp)}")
        return 0
    r = load_recipe(args.model)
    problems = disagreements(r, read_hf_config(args.hf_config))
    if problems:
        print(f"{args.hf_config} disagrees with recipe {r.name} ({len(problems)}):")
        for line in problems:
            print(f"  - {line}")
        return 1
    print(f"{args.hf_config} agrees with recipe {r.name}")
    return 0
