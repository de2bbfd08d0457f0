"""Run Megatron-LM's own ``pretrain_gpt.py`` (in the current folder) on CPU under torchrun, with gloo.

npubox's CPU shims (llm.accel.install_cpu_shims: "cuda" tensors on the CPU, the CPU RNG tracker), plus what only
Megatron's start-up and checkpoint code asks of a GPU, each replaced by what a CPU has:

- ``torch.cuda.is_available``: initialize_megatron asserts it;
- ``torch.cuda.device_count`` (1) and ``set_device``: _initialize_distributed builds the model-parallel groups only
  when a device is counted;
- ``torch.cuda.get_rng_state``: save_checkpoint records it (the CPU generator's state instead);
- Megatron's data loaders ask to pin their batches (page-locked memory serves copies to a GPU; asking initialises
  CUDA on a CUDA build of torch): they do not pin;
- ``torch.cuda.is_current_stream_capturing`` (torch's optimizers ask it once CUDA counts as available): no;
- ``megatron.legacy.fused_kernels.load``: compiles CUDA kernels with nvcc (unused with --no-masked-softmax-fusion);
- ``megatron.training.initialize._warmup_jit_function``: runs the CUDA jit fusions once;
- ``set_jit_fusion_options`` (torch 2.1): turns on nvfuser, which a CPU build of torch 2.1 refuses;
- ``all_gather_into_tensor`` (Megatron's timers), which gloo has only from torch 2.2: an ``all_gather`` into
  the output's chunks where gloo refuses it;
- RMSNorm, where the local spec has none without Apex/Transformer Engine (core_r0.8.0: its torch
  fallback refuses RMSNorm): a module of torch ops with the same ``weight`` parameter stands in, in
  fp32 as Megatron's fused kernels compute it.
"""

import importlib.util
import runpy
import sys

import torch

# Megatron first: some of its modules torch.jit.script functions at import (core_r0.8.0's
# fused_cross_entropy), which must see torch's own tensor factories, not the shims' wrappers.
from megatron.legacy import fused_kernels  # noqa: E402
from megatron.training import initialize  # noqa: E402

from llm.accel import install_cpu_shims

install_cpu_shims()
torch.cuda.is_available = lambda: True
torch.cuda.device_count = lambda: 1
torch.cuda.set_device = lambda device: None
torch.cuda.get_rng_state = lambda device="cuda": torch.get_rng_state()
_data_loader_init = torch.utils.data.DataLoader.__init__


def data_loader_init(self, *args, **kwargs):
    kwargs["pin_memory"] = False  # nothing to pin for: batches stay on the CPU
    _data_loader_init(self, *args, **kwargs)


torch.utils.data.DataLoader.__init__ = data_loader_init
torch.cuda.is_current_stream_capturing = lambda: False

fused_kernels.load = lambda args: None
initialize._warmup_jit_function = lambda: None
if torch.__version__ < "2.2":  # core_r0.8.0's set_jit_fusion_options turns nvfuser on, which torch 2.1 has only on CUDA
    from megatron.training import training  # noqa: E402

    training.set_jit_fusion_options = lambda *args, **kwargs: None


_all_gather_into_tensor = torch.distributed.all_gather_into_tensor


def all_gather_into_tensor(output, input, group=None, async_op=False):
    try:
        return _all_gather_into_tensor(output, input, group=group, async_op=async_op)
    except RuntimeError as e:
        if "no support for _allgather_base in Gloo" not in str(e):
            raise
    torch.distributed.all_gather(
        list(output.chunk(torch.distributed.get_world_size(group))), input.contiguous(), group=group
    )


torch.distributed.all_gather_into_tensor = torch.distributed._all_gather_base = all_gather_into_tensor


class RMSNorm(torch.nn.Module):
    def __init__(self, config, hidden_size: int, eps: float = 1e-5, **_unused):
        super().__init__()
        self.config, self.eps = config, eps
        self.weight = torch.nn.Parameter(torch.ones(hidden_size, dtype=config.params_dtype))

    def forward(self, x):
        y = x.float()
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(x.dtype)


if importlib.util.find_spec("megatron.core.transformer.torch_norm") is None:  # core_r0.8.0: torch_layer_norm only
    from megatron.core.models.gpt import gpt_layer_specs  # noqa: E402
    from megatron.core.transformer import transformer_block  # noqa: E402

    gpt_layer_specs.LNImpl = transformer_block.LayerNormImpl = RMSNorm
sys.argv = ["pretrain_gpt.py", *sys.argv[1:]]
runpy.run_path("pretrain_gpt.py", run_name="__main__")
