"""`python -m llm <phase> [args]`: the phases that run inside an npubox container.

Each phase is a module with ``main(argv: list[str]) -> int``; it is imported only when asked
for, so that `python -m llm env` works even where torch is broken.
"""

from __future__ import annotations

import importlib
import sys

from llm.errors import NpuboxError

PHASES: dict[str, tuple[str, str]] = {
    "env": ("llm.runtime_report", "print the realized environment; --verify compares it with the image's spec"),
    "sample": ("llm.sample", "make the tiny model's corpus, tokenizer and HF weights locally (no network)"),
    "convert": ("llm.convert", "convert checkpoints: HF safetensors <-> Megatron-core, any TP/PP"),
    "preprocess": ("llm.preprocess", "raw datasets -> Megatron indexed datasets"),
    "pretrain": ("llm.pretrain", "train with megatron-core GPTModel"),
    "launch": ("llm.launch", "multi-process / multi-node launch through torchrun"),
    "eval": ("llm.eval", "MMLU, C-Eval, BoolQ accuracy"),
    "all": ("llm.all_phases", "sample -> convert -> preprocess -> pretrain -> convert back -> eval"),
    "recipe": ("llm.recipes.cli", "list recipes, show one, check one against a HF config.json"),
}


def usage() -> str:
    width = max(map(len, PHASES))
    lines = ["usage: python -m llm <phase> [options]   (python -m llm <phase> --help for its options)", "", "phases:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in PHASES.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    phase, rest = argv[0], argv[1:]
    if phase not in PHASES:
        print(f"error: unknown phase {phase!r}; phases: {', '.join(PHASES)}", file=sys.stderr)
        return 2
    module = importlib.import_module(PHASES[phase][0])
    try:
        return int(module.main(rest) or 0)
    except NpuboxError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
