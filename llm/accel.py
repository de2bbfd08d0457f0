"""The one device layer: NPU (Ascend), CUDA or CPU, and the matching distributed backend.

Nothing else in `llm/` branches on the device. Call :func:`detect` BEFORE importing
``megatron.core`` anywhere in the process: on Ascend, MindSpeed's adaptor must patch megatron
before megatron is imported, and ``torch_npu.contrib.transfer_to_npu`` must route
``torch.cuda.*`` / ``device="cuda"`` to the NPU.

    accel = detect()                     # what is here; imports the NPU stack when present
    accel.set_device(local_rank)         # binds this process to its device; installs CPU shims
    accel.model_parallel_seed(seed)      # megatron's per-TP-rank RNG streams (after parallel_state init)

On CPU, megatron-core runs with gloo (tensor and pipeline parallel included) after two shims,
both installed by :func:`install_cpu_shims` and nowhere else:

1. "cuda" means the CPU: ``torch.cuda.current_device()`` answers ``"cpu"``. megatron-core
   allocates grad buffers, p2p receive tensors and norms with ``device=torch.cuda.current_device()``
   and, in a few places (optimizer scale, clip-grad norms, schedule token counts, causal masks),
   with a literal ``device="cuda"`` or ``.cuda()``; a CPU build of torch raises on each. So the
   same shim also maps ``device="cuda"`` to ``"cpu"`` in torch's tensor factories, makes
   ``Tensor.cuda()`` and ``torch.cuda.synchronize()`` no-ops, and makes a CPU tensor name its
   type as the CUDA one (``Tensor.type()`` answers ``"torch.cuda.FloatTensor"``): megatron-core's
   mixed-precision optimizer (bf16), distributed optimizer and grad clipping accept only
   parameters of those type names. (On NPU, ``transfer_to_npu`` does this job for the NPU.)
2. megatron-core's CUDA RNG tracker (``tensor_parallel.random``) is replaced by one that forks the
   CPU generator's state. Tensor-parallel weight init and dropout inside TP regions run under
   ``get_cuda_rng_tracker().fork()``, which reads and writes the CUDA generator; on CPU the ops
   draw from the CPU generator, so that is the state which must be forked for each TP rank to get
   its own stream (and for the default stream to be unchanged afterwards).

Light at import: torch is imported inside the functions.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from dataclasses import dataclass
from typing import Literal

Kind = Literal["npu", "cuda", "cpu"]
BACKENDS: dict[str, str] = {"npu": "hccl", "cuda": "nccl", "cpu": "gloo"}

# Dense BF16 peak, TFLOP/s per device (vendor data sheets). Matched as substrings of the device
# name that torch reports (e.g. "Ascend910B2", "NVIDIA H100 80GB HBM3"); longest match wins.
PEAK_TFLOPS_BF16: dict[str, float] = {
    "910B1": 414.0,
    "910B2": 376.0,
    "910B3": 313.0,
    "910B4": 280.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "H200": 989.0,
}


@dataclass(frozen=True)
class Accelerator:
    kind: Kind
    device_count: int  # devices visible to this process (CPU: 0)
    device_name: str  # what torch reports for device 0 ("cpu" on CPU)

    @property
    def backend(self) -> str:
        """torch.distributed backend: hccl (NPU), nccl (CUDA), gloo (CPU)."""
        return BACKENDS[self.kind]

    @property
    def attention(self) -> str:
        """The core attention :func:`llm.model.build_gpt_model` uses by default (see
        :mod:`llm.sdpa_attention`). CUDA: "sdpa" (FlashAttention; on an H200 it took `llm pretrain`
        from 9.8 % to 20.6 % MFU for Qwen2.5-0.5B at seq 2048). CPU: "sdpa" (bench/attention.py,
        fp32, one thread: forward + backward 1.3× as fast at seq 128, 4.3× at seq 1024). NPU:
        megatron's "unfused", the one MindSpeed patches; SDPA there is unmeasured."""
        return "unfused" if self.kind == "npu" else "sdpa"

    @property
    def peak_tflops(self) -> float | None:
        """Dense BF16 peak per device, or None where unknown (CPU reports no MFU)."""
        if self.kind == "cpu":
            return None
        matches = [k for k in PEAK_TFLOPS_BF16 if k in self.device_name]
        return PEAK_TFLOPS_BF16[max(matches, key=len)] if matches else None

    def device(self, local_rank: int = 0):
        import torch

        if self.kind == "cpu":
            return torch.device("cpu")
        # On NPU transfer_to_npu maps "cuda" to the NPU, so megatron's "cuda" code paths agree.
        return torch.device(self.kind, local_rank)

    def set_device(self, local_rank: int = 0) -> None:
        """Bind this process to its device (CPU: install the megatron shims instead)."""
        import torch

        if self.kind == "cpu":
            install_cpu_shims()
        elif self.kind == "npu":
            torch.npu.set_device(local_rank)
        else:
            torch.cuda.set_device(local_rank)

    def synchronize(self) -> None:
        import torch

        if self.kind == "npu":
            torch.npu.synchronize()
        elif self.kind == "cuda":
            torch.cuda.synchronize()

    def model_parallel_seed(self, seed: int) -> None:
        """Seed the default generators and megatron's tracker (data-, tensor-, expert-parallel
        streams). Call after ``parallel_state.initialize_model_parallel``."""
        import random

        import numpy as np
        import torch
        from megatron.core import tensor_parallel

        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        if self.kind == "cpu":
            install_cpu_shims()
        tensor_parallel.model_parallel_cuda_manual_seed(seed)

    def rng_state(self) -> dict:
        """Every generator a training step draws from, for exact resume."""
        import random

        import numpy as np
        import torch
        from megatron.core import tensor_parallel

        state = {
            "random": random.getstate(),
            "np": _plain_np_state(np.random.get_state()),
            "torch": torch.get_rng_state(),
            "tracker": {k: v.clone() for k, v in tensor_parallel.get_cuda_rng_tracker().get_states().items()},
        }
        if self.kind != "cpu":
            state["device"] = torch.cuda.get_rng_state()  # NPU: routed by transfer_to_npu
        return state

    def set_rng_state(self, state: dict) -> None:
        import random

        import numpy as np
        import torch
        from megatron.core import tensor_parallel

        random.setstate(state["random"])
        name, keys, pos, has_gauss, cached = state["np"]
        np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(state["torch"])
        tensor_parallel.get_cuda_rng_tracker().set_states(state["tracker"])
        if self.kind != "cpu" and "device" in state:
            torch.cuda.set_rng_state(state["device"])


def _plain_np_state(state: tuple) -> tuple:
    """numpy's generator state with its key array as a list: loadable with weights_only=True."""
    name, keys, pos, has_gauss, cached = state
    return (name, keys.tolist(), int(pos), int(has_gauss), float(cached))


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def detect(prefer: Kind | None = None) -> Accelerator:
    """Find the accelerator of this process. ``prefer`` (or $NPUBOX_DEVICE = npu|cuda|cpu) forces one.

    On NPU this imports torch_npu, ``torch_npu.contrib.transfer_to_npu`` and, when installed,
    ``mindspeed.megatron_adaptor`` (which must precede any megatron import)."""
    import torch

    prefer = prefer or os.environ.get("NPUBOX_DEVICE") or None  # type: ignore[assignment]
    if prefer not in (None, "npu", "cuda", "cpu"):
        from llm.errors import NpuboxError

        raise NpuboxError(f"NPUBOX_DEVICE is {prefer!r}; expected npu, cuda or cpu")

    if prefer in (None, "npu") and _has("torch_npu"):
        import torch_npu  # noqa: F401
        from torch_npu.contrib import transfer_to_npu  # noqa: F401  (routes torch.cuda.* to NPU)

        if _has("mindspeed"):
            import mindspeed.megatron_adaptor  # noqa: F401
        if torch.npu.is_available() and torch.npu.device_count() > 0:
            return Accelerator("npu", torch.npu.device_count(), torch.npu.get_device_name(0))
    if prefer in (None, "cuda") and torch.cuda.is_available() and torch.cuda.device_count() > 0:
        return Accelerator("cuda", torch.cuda.device_count(), torch.cuda.get_device_name(0))
    if prefer in ("npu", "cuda"):
        from llm.errors import NpuboxError

        raise NpuboxError(f"NPUBOX_DEVICE={prefer} but no {prefer} device is visible to this process")
    return Accelerator("cpu", 0, "cpu")


_CPU_SHIMS_INSTALLED = False


def install_cpu_shims() -> None:
    """The two CPU shims described in the module docstring. Idempotent."""
    global _CPU_SHIMS_INSTALLED
    if _CPU_SHIMS_INSTALLED:
        return
    import torch
    from megatron.core.tensor_parallel import random as mpu_random

    # Shim 1: "cuda" means the CPU.
    torch.cuda.current_device = lambda: "cpu"  # type: ignore[assignment]
    torch.cuda.synchronize = lambda device=None: None  # CPU ops are synchronous (p2p calls it)

    def cpu_instead_of_cuda(factory):
        @functools.wraps(factory)
        def wrapper(*args, **kwargs):
            device = kwargs.get("device")
            if device is not None and torch.device(device).type == "cuda":
                kwargs["device"] = "cpu"
            return factory(*args, **kwargs)

        return wrapper

    for name in ("tensor", "zeros", "ones", "empty", "full", "arange", "randn", "rand", "randint"):
        setattr(torch, name, cpu_instead_of_cuda(getattr(torch, name)))
    torch.Tensor.cuda = lambda self, *args, **kwargs: self  # type: ignore[method-assign]

    # ... and a CPU tensor names its type as the CUDA one ("torch.cuda.FloatTensor"): megatron's
    # optimizers and grad clipping accept only parameters whose ``Tensor.type()`` says CUDA.
    tensor_type = torch.Tensor.type

    def cuda_type_name(self, dtype=None, non_blocking=False, **kwargs):
        if dtype is None and not kwargs and self.device.type == "cpu":
            return tensor_type(self).replace("torch.", "torch.cuda.", 1)
        return tensor_type(self, dtype, non_blocking, **kwargs)

    torch.Tensor.type = cuda_type_name  # type: ignore[method-assign]

    # Shim 2: the RNG tracker forks the CPU generator.
    class CpuRNGStatesTracker(mpu_random.CudaRNGStatesTracker):
        def add(self, name, seed):
            self._is_initialized = True
            if seed in self.seeds_:
                raise Exception(f"seed {seed} already exists")
            self.seeds_.add(seed)
            if name in self.states_:
                raise Exception(f"rng state {name} already exists")
            orig = torch.get_rng_state()
            torch.manual_seed(seed)
            self.states_[name] = torch.get_rng_state()
            torch.set_rng_state(orig)

        @contextlib.contextmanager
        def fork(self, name=mpu_random._MODEL_PARALLEL_RNG_TRACKER_NAME):
            if name not in self.states_:
                raise Exception(f"rng state {name} is not added")
            orig = torch.get_rng_state()
            torch.set_rng_state(self.states_[name])
            try:
                yield
            finally:
                self.states_[name] = torch.get_rng_state()
                torch.set_rng_state(orig)

    mpu_random._CUDA_RNG_STATE_TRACKER = CpuRNGStatesTracker()
    mpu_random._CUDA_RNG_STATE_TRACKER_INITIALIZED = True
    _CPU_SHIMS_INSTALLED = True
