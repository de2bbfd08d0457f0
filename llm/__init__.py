"""npubox: sealed, pinned LLM training environments (import package ``llm``).

Importing ``llm`` or ``llm.env`` must stay light: no torch, no megatron. Heavy
imports live inside the phase modules that run in the container.
"""

__version__ = "0.1.0"
