"""The ``mindformers`` engine (Ascend MindSpore stacks): the stack's own MindFormers trainer script under msrun,
with the guide's yaml for the model and npubox's workspace paths and overrides on top.

``guides`` holds the facts of each release's guide (working folder, script, yaml per model, run mode), ``msrun``
composes the launcher's command as the stack's ``scripts/msrun_launcher.sh`` does, ``yaml_config`` applies the
overrides to the guide's yaml and lists what changed, ``run`` puts them together and runs them. Importing it does
not import MindSpore.
"""

from __future__ import annotations

STARTS_ITS_OWN_WORKERS = True  # msrun around the stack's trainer script, one process per device


def main(argv: list[str], launch_ns=None) -> int:
    from llm.pretrain.mindformers.run import main as run_main

    return run_main(argv, launch_ns=launch_ns)
