"""MindSpore's MindFormers stacks (the Qwen2 / Qwen1.5 / Qwen2.5 guides): npubox's phases drive the stack's own
tools here, not re-implementations: ``convert`` (HF ⇄ MindSpore checkpoint with the release's ``convert_weight.py``
and MindFormers' reverse converter), ``preprocess`` (alpaca → MindRecord with the release's scripts), and the
``mindformers`` pretrain engine (:mod:`llm.pretrain.mindformers`: the guide's trainer under msrun).

``guides``: each release's facts; ``stack``: the image's stack and how its scripts run; ``cpu``: what a CPU twin
changes, each change named. Importing it does not import MindSpore.
"""
