"""`python -m llm eval`: MMLU, C-Eval and BoolQ accuracy from a HF directory or a Megatron checkpoint.

    data.py          read the task files (MindSpeed-LLM's layouts), count unusable rows by reason
    prompts.py       the prompt text of each task (standard MMLU format, few-shot)
    scoring.py       log-likelihood of each choice's answer tokens, batched by length
    hf_engine.py     transformers engine
    mcore_engine.py  megatron-core engine (TP under `python -m llm launch`)
    results.py       accuracy per subject / category / overall, table, JSON
    sample_sets.py   small MMLU-, C-Eval- and BoolQ-format sets of our own for the tiny model
    cli.py           the command line

Light at import: torch and transformers are imported inside the functions that use them.
"""

from __future__ import annotations


def main(argv: list[str]) -> int:
    from llm.eval.cli import main as cli_main

    return cli_main(argv)
