"""`python -m llm convert`: Hugging Face ⇄ Megatron checkpoints (megatron-core's model, or Megatron's legacy one),
any TP/PP, streaming.

    keymap.py   the tensors of each model family by canonical name, and their HF names
    layout.py   the tensors of a Megatron rank file, one table with a column per layout (mcore, legacy), and the
                per-rank packing both directions share (QKV per query group, SwiGLU per rank, vocab padding)
    hf.py       HF directories: checks, lazy reads, sharded safetensors writing
    mcore.py    Megatron checkpoints: rank-by-rank writing, TP-merging reads, both walking layout.py's table
    cli.py      the command line; every check runs before anything is written
"""

from llm.convert.cli import main

__all__ = ["main"]
