"""`python -m llm pretrain`: train a model on an indexed dataset with the engine the image's spec names.

One package per engine, each with ``main(argv, launch_ns=None)`` and ``STARTS_ITS_OWN_WORKERS``:

- ``mcore`` (CPU, CUDA; and wherever no spec is baked): our own loop on megatron-core's GPTModel
  (:mod:`llm.pretrain.mcore`); ``llm launch`` starts one worker per device, each running it.
- ``mindspeed-llm`` (Ascend PyTorch stacks): the stack's own MindSpeed-LLM / ModelLink ``pretrain_gpt.py`` under
  torchrun, with its example script's flags (:mod:`llm.pretrain.mindspeed_llm`).
- ``mindformers`` (Ascend MindSpore stacks): the stack's own MindFormers trainer under msrun
  (:mod:`llm.pretrain.mindformers`).

What the engines share: ``config`` (the flags and their recipe defaults) and ``metrics`` (log line, JSONL, MFU,
progress bar). ``--engine NAME`` overrides the spec. Importing this package does not import torch.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from llm.errors import NpuboxError

ENGINES = {
    "mcore": "llm.pretrain.mcore",
    "mindspeed-llm": "llm.pretrain.mindspeed_llm",
    "mindformers": "llm.pretrain.mindformers",
}


def engine_module(engine: str) -> ModuleType:
    """The package that implements ``engine`` (a name of :data:`ENGINES`)."""
    return importlib.import_module(ENGINES[engine])


def split_engine(argv: list[str]) -> tuple[str, list[str]]:
    """(engine, the other arguments): ``--engine X`` / ``--engine=X`` if given, else the baked spec's."""
    from llm.runtime_report import baked_engine

    rest, engine = [], None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest += argv[i:]
            break
        if arg == "--engine" or arg.startswith("--engine="):
            if arg == "--engine":
                if i + 1 >= len(argv):
                    raise NpuboxError(f"--engine needs a value: one of {', '.join(ENGINES)}")
                engine, i = argv[i + 1], i + 2
            else:
                engine, i = arg.split("=", 1)[1], i + 1
            continue
        rest.append(arg)
        i += 1
    where = "--engine"
    if engine is None:
        engine, where = baked_engine(), "the image's spec: engine"
    if engine not in ENGINES:
        raise NpuboxError(f"{where} {engine!r}: expected one of {', '.join(ENGINES)}")
    return engine, rest


def main(argv: list[str]) -> int:
    engine, rest = split_engine(argv)
    return engine_module(engine).main(rest)
