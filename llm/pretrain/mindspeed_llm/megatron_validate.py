"""Check the mindspeed-llm engine's flags with the pinned Megatron-LM's own argument parser and validation.

    PYTHONPATH=<MindSpeed-LLM tree with megatron/ copied in>:<MindSpeed tree> \\
        python -m llm.pretrain.mindspeed_llm.megatron_validate --stack 3a712f58 --model qwen25-7b \\
            [--nnodes 1] [overrides] [-- extra]

Composes the flags as ``llm pretrain`` would for ``--nnodes`` nodes of ``--nproc-per-node`` devices (8), in a
throw-away workspace, then runs Megatron's ``parse_args`` with ``ignore_unknown_args=False`` and ``validate_args``
(``WORLD_SIZE`` set), each wrapped as the stack's own adaptor wraps it: MindSpeed-LLM's ``parse_args_decorator`` and
``validate_args_decorator`` (``_v2_`` from 2.3.0 on), or AscendSpeed's then ModelLink's. The vendor packages'
``__init__`` modules patch Megatron for the NPU and are not run: only their ``arguments`` modules are imported. Where
torch_npu, torchair or CANN's ``acl`` are absent (a CPU twin), stand-in modules answer the vendor modules' imports of
them; on ModelLink's stack the placeholder modules AscendSpeed itself registers for Transformer Engine are added.
What stood in and what did not import is printed. Exit status 0: the flags parse and validate; 1: Megatron refused
them (its message is printed); 2: the check could not run (a package of the stack is missing here).
``check(argv, source, world_size)`` does the same for a test that already has the flags.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import io
import os
import sys
import tempfile
import types
from dataclasses import dataclass, field
from pathlib import Path

from llm.errors import NpuboxError

# Per source family, the argument modules whose decorators the stack's adaptor applies to Megatron's parse_args and
# validate_args, innermost first: MindSpeed-LLM 2.x/26.x patch them with mindspeed_llm.training.arguments' own
# (2.0.0 also replaces MindSpeed's process_args by a dummy, so MindSpeed's are not used); ModelLink 1.0 with
# AscendSpeed's (ascendspeed/megatron_adaptor.py), then ModelLink's (modellink/model_adaptor.py).
VENDOR_ARGUMENTS = {
    "MindSpeed-LLM": ["mindspeed_llm.training.arguments"],
    "ModelLink": ["ascendspeed.arguments", "modellink.arguments"],
}
BARE_PACKAGES = ("mindspeed_llm", "mindspeed_llm.training", "modellink")
NPU_ONLY = ("torch_npu", "torchair", "acl")  # torch_npu, its graph compiler, CANN's Python runtime: NPU machines only


@dataclass
class Report:
    argv: list[str]
    world_size: int
    megatron: str = ""  # the megatron package that parsed the flags
    extras: list[str] = field(default_factory=list)  # vendor argument modules used
    missing: dict[str, str] = field(default_factory=dict)  # vendor argument module -> why it did not import
    validated_by: list[str] = field(default_factory=list)
    stand_ins: list[str] = field(default_factory=list)  # what stands in for NPU-only modules
    error: str | None = None  # what Megatron said when it refused the flags
    blocked: str | None = None  # why the check could not run to its end
    args: argparse.Namespace | None = None


def bare_package(name: str) -> None:
    """Make ``name`` importable as a package without running its ``__init__`` (found on sys.path)."""
    if name in sys.modules:
        return
    parent, _, leaf = name.rpartition(".")
    if parent and parent not in sys.modules:
        return
    search = sys.modules[parent].__path__ if parent else sys.path
    for root in search:
        path = Path(root, leaf)
        if (path / "__init__.py").is_file():
            module = types.ModuleType(name)
            module.__path__ = [str(path)]
            module.__file__ = str(path / "__init__.py")
            sys.modules[name] = module
            return


class _Anything:
    """Whatever a vendor module reads from torch_npu at import time (a name, a call, a base class)."""

    def __init__(self, name: str):
        self._name = name

    def __call__(self, *args, **kwargs):
        return _Anything(f"{self._name}()")

    def __getattr__(self, key: str):
        if key.startswith("__"):
            raise AttributeError(key)
        return _Anything(f"{self._name}.{key}")

    def __mro_entries__(self, bases):
        return (object,)

    def __iter__(self):
        return iter(())

    def __bool__(self):
        return False


class _StandInModule(types.ModuleType):
    def __getattr__(self, key: str):
        if key.startswith("__"):
            raise AttributeError(key)
        return _Anything(f"{self.__name__}.{key}")


class _StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports of torch_npu and acl (and their submodules) get stand-ins: no NPU here, only argument definitions are
    read from the modules that import them."""

    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in NPU_ONLY:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StandInModule(spec.name)
        module.__path__ = []
        module.__file__ = f"<npubox stand-in for {spec.name}>"
        return module

    def exec_module(self, module):
        pass


def install_npu_stand_ins(source: str) -> list[str]:
    """Without torch_npu (a CPU twin): a stand-in ``torch_npu`` for the vendor modules' imports, and the placeholder
    modules AscendSpeed's own adaptor registers before Megatron is imported (ascendspeed/megatron_adaptor.py
    ``exe_adaptation`` at 224ae35e: transformer_engine with ``pytorch = torch.nn``, fused_layer_norm_cuda, amp_C,
    flash_attn.flash_attn_interface), which bcce6f's ``megatron.arguments`` needs to import. Returns what it did."""
    import torch

    done = []
    absent = [name for name in NPU_ONLY if importlib.util.find_spec(name) is None]
    if absent:
        sys.meta_path.insert(0, _StandInFinder())
        done.append(f"{', '.join(absent)} (absent): stand-in modules for the vendor modules' imports")
    if source == "ModelLink" and importlib.util.find_spec("transformer_engine") is None:
        te = types.ModuleType("transformer_engine")
        te.pytorch = torch.nn
        torch.nn.LayerNormLinear = getattr(torch.nn, "LayerNormLinear", torch.nn.Module)
        torch.nn.DotProductAttention = getattr(torch.nn, "DotProductAttention", torch.nn.Module)
        flash = types.ModuleType("flash_attn.flash_attn_interface")
        flash.flash_attn_unpadded_func = torch.nn.Module
        placeholders = {
            "transformer_engine": te,
            "fused_layer_norm_cuda": types.ModuleType("fused_layer_norm_cuda"),
            "amp_C": types.ModuleType("amp_C"),
            "flash_attn.flash_attn_interface": flash,
        }
        for name, module in placeholders.items():
            sys.modules.setdefault(name, module)
        done.append("transformer_engine (absent): AscendSpeed's placeholder modules")
    return done


def megatron_arguments():
    """``megatron.arguments`` (bcce6f) or ``megatron.training.arguments`` (core_r0.8.0 on)."""
    legacy = importlib.util.find_spec("megatron.arguments") is not None
    return importlib.import_module("megatron.arguments" if legacy else "megatron.training.arguments")


def vendor_modules(source: str, report: Report) -> list[types.ModuleType]:
    for name in BARE_PACKAGES:
        bare_package(name)
    out = []
    for name in VENDOR_ARGUMENTS[source]:
        try:
            out.append(importlib.import_module(name))
            report.extras.append(name)
        except Exception as e:  # noqa: BLE001 - the reason is the report
            report.missing[name] = f"{type(e).__name__}: {e}"
    return out


def check(argv: list[str], source: str, world_size: int, stand_ins: bool = True) -> Report:
    """Parse and validate ``argv`` (pretrain_gpt.py's flags) in this process, with ``world_size`` processes."""
    report = Report(argv, world_size)
    report.stand_ins = install_npu_stand_ins(source) if stand_ins else []
    os.environ.update(WORLD_SIZE=str(world_size), RANK="0", LOCAL_RANK="0", CUDA_DEVICE_MAX_CONNECTIONS="1")
    A = megatron_arguments()
    report.megatron = A.__file__
    modules = vendor_modules(source, report)

    parse, validate = A.parse_args, A.validate_args
    report.validated_by.append(f"{A.__name__}.validate_args")
    for module in modules:  # as the stack's adaptor patches them
        if hasattr(module, "parse_args_decorator"):
            parse = module.parse_args_decorator(parse)
        decorator = getattr(module, "validate_args_v2_decorator", None) or getattr(
            module, "validate_args_decorator", None
        )  # 26.0.0: v2
        if decorator is not None:
            validate = decorator(validate)
            report.validated_by.append(f"{module.__name__}.{decorator.__name__}")

    saved = sys.argv
    sys.argv = ["pretrain_gpt.py", *argv]
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            args = parse(None, False)  # parse_args(extra_args_provider=None, ignore_unknown_args=False)
    except SystemExit:
        said = stderr.getvalue().strip().splitlines()
        report.error = said[-1] if said else "parse_args exited"
        return report
    except ImportError as e:  # a vendor feature module needs a package this environment lacks
        report.blocked = f"parse_args: {type(e).__name__}: {e}"
        return report
    finally:
        sys.argv = saved
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            validate(args, {})
    except ImportError as e:
        report.blocked = f"validate_args: {type(e).__name__}: {e}"
        return report
    except (AssertionError, ValueError, RuntimeError, TypeError, AttributeError, KeyError) as e:
        report.error = f"{type(e).__name__}: {e}"
        return report
    report.args = args
    return report


def throwaway_workspace(root: Path, model: str, tp: int, pp: int):
    """A workspace holding a one-document indexed dataset, an (empty) tokenizer folder and a converted-checkpoint
    marker: parse_args and validate_args read none of them."""
    import numpy as np

    from llm.checkpoint import TRACKER_FILE
    from llm.preprocess.indexed_writer import IndexedDatasetWriter, publish
    from llm.workspace import Workspace

    ws = Workspace(root)
    prefix = ws.text_dataset(model)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    writer = IndexedDatasetWriter(prefix, np.dtype(np.int32))
    writer.add_documents(np.arange(8, dtype=np.int32), np.array([8], dtype=np.int32))
    writer.finish()
    publish([writer])
    ws.hf_dir(model).mkdir(parents=True)  # MindSpeed-LLM's validation checks that the tokenizer folder exists
    converted = ws.converted_dir(model, tp, pp)
    converted.mkdir(parents=True)
    (converted / TRACKER_FILE).write_text("1")
    return ws


def composed_argv(argv: list[str], nnodes: int, nproc_per_node: int, root: Path):
    """pretrain_gpt.py's flags as the engine composes them (``argv``: pretrain options, ``--stack``, ``-- extra``)."""
    from llm.pretrain.config import build_parser
    from llm.pretrain.mindspeed_llm.run import make_plan
    from llm.recipes import load_recipe
    from llm.torchrun import build_parser as launch_parser

    head = argv[: argv.index("--")] if "--" in argv else argv
    known, _ = build_parser().parse_known_args(head)
    recipe = load_recipe(known.model)
    tp, pp = known.tp or recipe.defaults("pretrain").tp, known.pp or recipe.defaults("pretrain").pp
    ws = throwaway_workspace(root, known.model, tp, pp)
    ns = launch_parser().parse_args(["--nproc", str(nproc_per_node), "--nnodes", str(nnodes), "pretrain"])
    plan, _ = make_plan(argv, ns, devices=nproc_per_node, workspace=ws)
    return plan


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(
        prog="python -m llm.pretrain.mindspeed_llm.megatron_validate",
        description=__doc__.split("\n\n")[0],
        allow_abbrev=False,
    )
    p.add_argument("--nnodes", type=int, default=1)
    p.add_argument("--nproc-per-node", type=int, default=8)
    opts, rest = p.parse_known_args(argv)
    if "--stack" not in rest:
        print(
            "error: --stack COMMIT (the MindSpeed-LLM / ModelLink commit of the tree on PYTHONPATH) is required",
            file=sys.stderr,
        )
        return 2
    try:
        with tempfile.TemporaryDirectory(prefix="npubox-validate-") as tmp:
            plan = composed_argv(rest, opts.nnodes, opts.nproc_per_node, Path(tmp))
            report = check(plan.composed.argv, plan.stack.source, plan.world_size)
    except NpuboxError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:  # the pinned Megatron itself
        print(f"error: Megatron-LM's arguments module does not import here: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    print(f"{plan.stack.name} {plan.script.path}: {len(plan.composed.argv)} words, world size {report.world_size}")
    print(f"megatron: {report.megatron}")
    for what in report.stand_ins:
        print(f"stand-in: {what}")
    for name in report.extras:
        print(f"extra arguments: {name}")
    for name, why in report.missing.items():
        print(f"not imported: {name}: {why}")
    if report.blocked:
        print(f"could not check: {report.blocked}")
        return 2
    if report.error:
        print(f"REFUSED: {report.error}")
        return 1
    print(f"ok: parsed with parse_args(ignore_unknown_args=False) and validated by {', '.join(report.validated_by)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
