"""The ``mindspeed-llm`` engine (Ascend PyTorch stacks): the stack's own MindSpeed-LLM / ModelLink
``pretrain_gpt.py`` under torchrun.

``scripts`` holds the facts of each release's example scripts (flags, torchrun options), ``run`` composes the plan
and runs it, ``megatron_log`` reads Megatron's iteration lines into the shared metrics, ``megatron_validate``
checks a composed command line with the pinned Megatron's own argument parser. Importing it does not import torch.
"""

from __future__ import annotations

STARTS_ITS_OWN_WORKERS = True  # torchrun around pretrain_gpt.py, one process per device


def main(argv: list[str], launch_ns=None) -> int:
    from llm.pretrain.mindspeed_llm.run import main as run_main

    return run_main(argv, launch_ns=launch_ns)
