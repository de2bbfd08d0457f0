"""npubox's shims for MindSpore's CPU backend, for the CPU twin of a MindFormers stack (never on an NPU).

Python imports this module at start-up because the mindformers engine puts its folder first on PYTHONPATH when the
device target is CPU. It changes nothing until MindSpore loads the module a shim is for; each shim stands in for
one Ascend kernel the CPU backend lacks (llm/mindformers/cpu.py lists them):

- ``TrainOneStepWithLossScaleCell.get_overflow_status``: off GPU, MindSpore's loss-scale cell checks overflow with
  ``NPUGetFloatStatusV2`` (or ``AllFinite``), neither of which the CPU backend has; the shim takes MindSpore's own
  ``IsFinite`` path (``_get_distributed_overflow_status_on_infnan_mode`` with ``_ascend_grad_overflow``).
- ``mindspore.communication.comm_func.barrier``: the ``Barrier`` kernel is Ascend-only and a PyNative all_reduce
  has no CPU kernel either; the shim all-reduces one number in graph mode, which the CPU backend runs.
"""

import importlib.abc
import importlib.machinery
import sys


def _loss_scale(module):
    def get_overflow_status(self, status, compute_output):
        return self._get_distributed_overflow_status_on_infnan_mode(module._ascend_grad_overflow, compute_output)

    module.TrainOneStepWithLossScaleCell.get_overflow_status = get_overflow_status


def _comm_func(module):
    import mindspore
    from mindspore import ops
    from mindspore.communication import GlobalComm

    def barrier(group=GlobalComm.WORLD_COMM_GROUP):
        mindspore.jit(ops.AllReduce(group=group))(mindspore.Tensor([0.0], mindspore.float32))

    module.barrier = barrier


SHIMS = {"mindspore.nn.wrap.loss_scale": _loss_scale, "mindspore.communication.comm_func": _comm_func}


class _AfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: for a shimmed module it wraps the normal loader so the shim runs right after it."""

    def find_spec(self, name, path, target=None):
        if name not in SHIMS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            SHIMS[name](module)

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _AfterImport())
