"""Kernel fusions that need no extra build (no Apex, no Transformer Engine), each opt-in by name.

Each runs with megatron-core 0.16.1 and torch alone (checked on CPU, DP2 with the distributed
optimizer: 20 steps of the tiny recipe give the losses of the unfused run within 3e-7, except
cross-entropy, see below); none is on by default until a GPU benchmark (bench/pretrain.py
--fusions ...) shows it pays:

- ``swiglu``: megatron-core's fused bias + SwiGLU (``bias_activation_fusion``; ``fused_bias_swiglu``,
  compiled with megatron's ``jit_fuser``).
- ``bias-dropout-add``: megatron-core's fused bias-dropout-add after attention and MLP
  (``bias_dropout_fusion``).
- ``cross-entropy``: megatron-core's fused vocab-parallel cross entropy (``cross_entropy_loss_fusion``
  with ``cross_entropy_fusion_impl="native"``; the "te" one needs Transformer Engine). It returns the
  logits' gradient in bf16, which is what a bf16 model has anyway: bf16 training only.
- ``adam``: torch's fused AdamW kernel (``fused=True``) for megatron-core's torch optimizer, which it
  otherwise runs with torch's default (``foreach``) implementation.
- ``compile``: ``torch.compile`` of the GPTModel's forward (``nn.Module.compile``: in place, so the
  state-dict keys stay the same).

Not here because they do not run without an extra build: RoPE fusion (``apply_rope_fusion``:
megatron-core refuses it without Transformer Engine >= 1.4), gradient-accumulation fusion (needs
Apex's ``fused_weight_gradient_mlp_cuda``), the fused masked softmax (CUDA kernels from Apex/TE;
SDPA attention makes it moot) and persistent LayerNorm (Apex).
"""

from __future__ import annotations

from typing import Any

from llm.errors import NpuboxError

# Fusion name -> the TransformerConfig fields that turn it on.
CONFIG_FUSIONS: dict[str, dict[str, Any]] = {
    "swiglu": {"bias_activation_fusion": True},
    "bias-dropout-add": {"bias_dropout_fusion": True},
    "cross-entropy": {"cross_entropy_loss_fusion": True, "cross_entropy_fusion_impl": "native"},
}
FUSIONS: tuple[str, ...] = (*CONFIG_FUSIONS, "adam", "compile")


def parse_fusions(text: str) -> tuple[str, ...]:
    """``"swiglu,compile"`` -> ``("swiglu", "compile")``; ``""`` or ``"none"`` -> ``()``."""
    names = tuple(n.strip() for n in text.split(",") if n.strip() and n.strip() != "none")
    unknown = [n for n in names if n not in FUSIONS]
    if unknown:
        raise NpuboxError(
            f"--fusions {text}: unknown {', '.join(unknown)}; expected a comma-separated list of "
            f"{', '.join(FUSIONS)} (or none)"
        )
    return names


def config_overrides(fusions: tuple[str, ...], bf16: bool) -> dict[str, Any]:
    """The TransformerConfig fields that ``fusions`` set (``bf16``: the model trains in bf16)."""
    if "cross-entropy" in fusions and not bf16:
        # megatron-core 0.16.1 fusions/fused_cross_entropy.py casts the logits' gradient to bf16.
        raise NpuboxError("--fusions cross-entropy rounds the logits' gradient to bf16: use it with --bf16 only")
    out: dict[str, Any] = {}
    for name in fusions:
        out.update(CONFIG_FUSIONS.get(name, {}))
    return out


def set_fused_adam(optimizer, fused: bool) -> None:
    """Run megatron-core's torch AdamW (inside its Chained/Distributed/Float16 optimizer wrappers) with
    torch's fused kernel, or with torch's default one. Call after a checkpoint's optimizer state is
    loaded: its param groups carry the choice of the run that saved it. The fused kernel keeps
    Adam's ``step`` on the parameters' device."""
    import torch

    for wrapper in getattr(optimizer, "chained_optimizers", [optimizer]):
        inner = getattr(wrapper, "optimizer", None)
        if inner is None or "fused" not in inner.defaults:  # Apex/TE FusedAdam: fused already
            continue
        for group in inner.param_groups:
            group["fused"], group["foreach"] = (True, False) if fused else (None, None)
            for param in group["params"]:
                state = inner.state.get(param, {})
                if fused and "step" in state:
                    state["step"] = state["step"].to(param.device, torch.float32)
