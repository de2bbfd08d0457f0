"""`python -m llm convert`: Hugging Face ⇄ megatron-core checkpoints, any TP/PP, streaming.

    keymap.py   the tensors of each model family by canonical name, and their HF names
    layout.py   megatron-core's per-rank layout (QKV per query group, SwiGLU per rank, vocab padding)
    hf.py       HF directories: checks, lazy reads, sharded safetensors writing
    mcore.py    megatron-core checkpoints: rank-by-rank writing, TP-merging reads
    cli.py      the command line; every check runs before anything is written
"""

from llm.convert.cli import main

__all__ = ["main"]
