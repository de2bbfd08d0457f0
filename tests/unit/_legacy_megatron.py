"""Build the legacy GPTModel that ModelLink v1.0.RC1.0 trains (Megatron-LM bcce6f54's megatron/model with MindSpeed
224ae35e's and ModelLink f33da62b's own patches) on this CPU, one TP × PP rank at a time, load a checkpoint into each
with Megatron's own ``load_checkpoint`` (strict), compare each rank's ``state_dict_for_save_checkpoint`` with the
rank file, and save them again with Megatron's own ``save_checkpoint``.

    python _legacy_megatron.py REPORT.json -- MEGATRON FLAGS (--load DIR --save DIR ...)

Run with the three source trees and the repository on PYTHONPATH. The ranks are made the way ModelLink's own
tools/checkpoint/saver_megatron.py makes them: one process, parallel sizes and ranks set in megatron.core.mpu
without a process group.

What this CPU lacks, and stands in for (each only imported, never used by the legacy model's parameters):

- ``torch_npu`` (the NPU; MindSpeed's and ModelLink's modules import it at the top);
- ``transformer_engine``, ``apex``, ``amp_C``, ``fused_layer_norm_cuda``, ``flash_attn`` (CUDA kernels; bcce6f's
  megatron.core imports Transformer Engine's layers at the top, its optimizer apex's; MindSpeed's
  megatron_adaptor puts stand-ins for the same modules in sys.modules on the NPU too);
- ``six``, ``pkg_resources``, ``einops``, ``torchvision``, ``PIL``, ``peft``: libraries the stack installs that
  this host's virtualenv has not (BERT tokenization, Transformer Engine's version check, vision datasets, LoRA);
- ``torch.cuda.get_rng_state`` (save_checkpoint records it): the CPU generator's state;
- torch >= 2.6 loads weights-only by default, and bcce6f's loader calls ``torch.load`` without saying: the
  checkpoint's ``argparse.Namespace`` is allowlisted (the stack's torch 2.1 loads it unrestricted).
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import types

KERNELS = ("torch_npu", "transformer_engine", "apex", "amp_C", "fused_layer_norm_cuda", "flash_attn")
LIBRARIES = ("six", "pkg_resources", "einops", "torchvision", "PIL", "peft")
STAND_INS = KERNELS + LIBRARIES


class _StandInType(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = _StandInType(name, (_StandIn,), {})
        setattr(cls, name, value)
        return value


class _StandIn(metaclass=_StandInType):
    """Any attribute of a stand-in module: a class whose attributes are classes; calling one fails."""

    def __init__(self, *args, **kwargs):
        raise RuntimeError(f"{type(self).__name__} is a stand-in: not available on this CPU")


class _StandInModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = _StandInType(name, (_StandIn,), {"__module__": self.__name__})
        setattr(self, name, value)
        return value


class _StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, names):
        self.names = set(names)

    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] in self.names:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StandInModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


def install_stand_ins() -> list[str]:
    missing = [name for name in STAND_INS if importlib.util.find_spec(name) is None]
    sys.meta_path.insert(0, _StandInFinder(missing))
    return missing


def apply_stack_patches() -> None:
    """What MindSpeed 224ae35e (ascendspeed/megatron_adaptor.py) and ModelLink f33da62b (modellink/__init__.py) do to
    bcce6f's model and arguments before pretrain_gpt.py builds the model: their own functions, applied in their
    order (MindSpeed's kernels and optimizer patches aside)."""
    import megatron.arguments
    import megatron.initialize
    import megatron.model
    from ascendspeed.arguments import parse_args_decorator, validate_args_decorator
    from ascendspeed.core.fusions.rms_norm import rms_norm_init
    from ascendspeed.core.fusions.transformer import ParallelAttention_wrapper, parallel_mlp_init

    megatron.model.rms_norm.RMSNorm.__init__ = rms_norm_init
    megatron.model.transformer.ParallelMLP.__init__ = parallel_mlp_init
    attention = megatron.model.transformer.ParallelAttention
    attention.__init__ = ParallelAttention_wrapper(attention.__init__)
    megatron.initialize.parse_args = parse_args_decorator(megatron.initialize.parse_args)
    megatron.arguments.parse_args = parse_args_decorator(megatron.arguments.parse_args)
    megatron.arguments.validate_args = validate_args_decorator(megatron.arguments.validate_args)
    import modellink  # noqa: F401  (its exe_adaptor patches megatron on import)


def tree(state) -> dict:
    """A nested state dict as {"a/b/c": [shape]} (None for a non-tensor)."""
    out = {}
    for key, value in state.items():
        if isinstance(value, dict):
            out.update({f"{key}/{k}": v for k, v in tree(value).items()})
        else:
            out[key] = list(value.shape) if hasattr(value, "shape") else None
    return out


def main() -> None:
    report_path, flags = sys.argv[1], sys.argv[sys.argv.index("--") + 1 :]
    stand_ins = install_stand_ins()
    import torch

    torch.serialization.add_safe_globals([argparse.Namespace])
    torch.cuda.get_rng_state = lambda device="cuda": torch.get_rng_state()
    apply_stack_patches()
    from llm.accel import install_cpu_shims

    install_cpu_shims()  # "cuda" tensors on the CPU (the rotary embedding's frequencies)

    import megatron.model
    from megatron import get_args
    from megatron.arguments import core_transformer_config_from_args, parse_args, validate_args
    from megatron.checkpointing import load_checkpoint, save_checkpoint
    from megatron.core import mpu
    from megatron.core.enums import ModelType
    from megatron.global_vars import set_global_variables

    sys.argv = ["pretrain_gpt.py", *flags]
    args = parse_args()
    tp, pp = args.tensor_model_parallel_size, args.pipeline_model_parallel_size
    os.environ["WORLD_SIZE"] = str(tp * pp)  # as saver_megatron.py: validate_args checks the world holds the layout
    args.world_size = tp * pp
    validate_args(args, {})
    set_global_variables(args, build_tokenizer=False)
    report = {"stand_ins": stand_ins, "checkpoint_args": checkpoint_args(args), "ranks": {}}
    args = get_args()
    args.model_type = ModelType.encoder_or_decoder  # what pretrain() sets (and saver_megatron.py for a GPT)
    mpu.set_tensor_model_parallel_world_size(tp)
    mpu.set_pipeline_model_parallel_world_size(pp)
    mpu.set_expert_model_parallel_world_size(1)
    mpu.set_expert_model_parallel_rank(0)

    for pp_rank in range(pp):
        for tp_rank in range(tp):
            mpu.set_pipeline_model_parallel_rank(pp_rank)
            mpu.set_tensor_model_parallel_rank(tp_rank)
            config = core_transformer_config_from_args(args)
            first, last = pp_rank == 0, pp_rank == pp - 1
            model = megatron.model.GPTModel(config, parallel_output=True, pre_process=first, post_process=last)
            args.consumed_train_samples = args.consumed_valid_samples = 0  # load_checkpoint asserts a fresh start
            iteration = load_checkpoint([model], None, None, strict=True)
            saved = model.state_dict_for_save_checkpoint()
            ours = torch.load(_rank_file(args.load, tp_rank, pp_rank, pp), weights_only=True)["model"]
            equal = _same_values(saved, ours)
            found = {"iteration": iteration, "megatron": tree(saved), "ours": tree(ours), "equal_values": equal}
            report["ranks"][f"{tp_rank},{pp_rank}"] = found
            save_checkpoint(iteration, [model], None, None)
    with open(report_path, "w", encoding="utf-8") as f:
        json.dump(report, f)


SHAPE = (
    "num_layers",
    "hidden_size",
    "ffn_hidden_size",
    "num_attention_heads",
    "num_query_groups",
    "group_query_attention",
    "kv_channels",
    "padded_vocab_size",
    "position_embedding_type",
    "add_bias_linear",
    "swiglu",
    "untie_embeddings_and_output_weights",
    "normalization",
    "tensor_model_parallel_size",
    "pipeline_model_parallel_size",
)


def checkpoint_args(args) -> dict:
    """What Megatron's load_args_from_checkpoint (--use-checkpoint-args) takes from the checkpoint into arguments
    that give no model shape: {field: value}."""
    import copy

    from megatron.checkpointing import load_args_from_checkpoint

    bare = copy.deepcopy(args)
    for name in SHAPE:
        setattr(bare, name, None)
    bare, _ = load_args_from_checkpoint(bare)
    return {name: getattr(bare, name) for name in (*SHAPE, "iteration")}


def _rank_file(load: str, tp_rank: int, pp_rank: int, pp: int) -> str:
    with open(os.path.join(load, "latest_checkpointed_iteration.txt"), encoding="utf-8") as f:
        iteration = int(f.read().strip())
    rank = f"mp_rank_{tp_rank:02d}" if pp == 1 else f"mp_rank_{tp_rank:02d}_{pp_rank:03d}"
    return os.path.join(load, f"iter_{iteration:07d}", rank, "model_optim_rng.pt")


def _same_values(a, b) -> bool:
    import torch

    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_values(a[k], b[k]) for k in a)
    return not isinstance(a, dict) and not isinstance(b, dict) and torch.equal(a, b)


if __name__ == "__main__":
    main()
