"""`python -m llm pretrain`: train a model on an indexed dataset with the engine the image's spec names.

- ``mcore`` (CPU, CUDA; and wherever no spec is baked): our own loop on megatron-core's GPTModel. One concept per
  file: ``config`` (flags and their defaults), ``data`` (GPTDataset over our indexed data, micro-batches per
  data-parallel rank), ``schedule`` (warmup + cosine LR), ``metrics`` (log line, JSONL, MFU, progress bar),
  ``training_state`` (save/resume a run in Megatron's layout) and ``train`` (the loop).
- ``mindspeed-llm`` (Ascend stacks): the stack's own MindSpeed-LLM / ModelLink ``pretrain_gpt.py`` under torchrun,
  with its example script's flags (``mindspeed_llm``), its log lines read into the same metrics (``megatron_log``,
  ``mindspeed_run``).

``--engine mcore|mindspeed-llm`` overrides the spec. Importing this package does not import torch.
"""

from __future__ import annotations

from llm.errors import NpuboxError

ENGINES = ("mcore", "mindspeed-llm")


def baked_engine() -> str:
    """The engine the image's baked spec names (``mcore`` when there is no spec or it names none)."""
    from llm.runtime_report import load_baked

    baked = load_baked()
    return ((baked or {}).get("spec") or {}).get("engine") or "mcore"


def split_engine(argv: list[str]) -> tuple[str, list[str]]:
    """(engine, the other arguments): ``--engine X`` / ``--engine=X`` if given, else the baked spec's."""
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
    if engine == "mindspeed-llm":
        from llm.pretrain.mindspeed_run import main as engine_main

        return engine_main(rest)
    from llm.pretrain.train import main as train_main

    return train_main(rest)
