"""The CPU twin of an Ascend spec: the same stack as far as a machine without NPUs can hold it.

Same pinned sources at the same commits installed the same way, the same Python-level pins,
torch's CPU kernels in place of torch + torch_npu, no CANN, no Ascend-only wheels, on the CPU
env's debootstrapped Debian base (with a C++ compiler, for Megatron's dataset helpers). No
hand-copied spec: the twin is derived from the real one, and what differs is listed
(`differences`), printed by the build plan and recorded in the image's labels.

Its lock (``<env>.twin-cpu.<arch>.lock`` beside the real one) is resolved from the real lock's
pins for the twin's Python: every package keeps its version; torch's own dependencies for the
twin's platform are added (on x86_64 PyPI's torch brings its CUDA libraries, which its CPU kernels
ignore). The real lock of the same architecture is the source of the pins when it exists, else
the aarch64 one (Ascend training servers are aarch64; torch_npu's x86_64 wheels need torch's
`+cpu` builds, which only PyTorch's own index publishes).

    twin = make_twin(load_spec("ascend-mindspeed-llm-2.0.0"))   # -> LoadedSpec
    twin.name == "ascend-mindspeed-llm-2.0.0-twin-cpu"
"""

from __future__ import annotations

from packaging.utils import canonicalize_name

from llm.env.spec import PIN_RE, LoadedSpec, load_spec
from llm.errors import NpuboxError

TWINS = ("cpu",)
# Built for the NPU only: torch_npu needs CANN's libraries to import; Ascend's apex is built
# against torch_npu; bitsandbytes-npu-beta is published for aarch64 NPU hosts only; triton-ascend
# is Triton's Ascend backend and installs a `triton` package of its own. The twin runs torch's own
# CPU kernels instead.
NPU_ONLY = frozenset({"torch-npu", "apex", "bitsandbytes-npu-beta", "triton-ascend"})
# What the twin's base adds to the CPU env's: a compiler for Megatron's dataset helpers
# (megatron/core/datasets/Makefile: c++, python3-config, make), which Megatron itself also runs
# (`make`, a no-op once built) when training starts.
BUILD_PACKAGES = ["g++", "make", "python3-dev"]
CPU_ENV = "cpu"  # the env whose base (debootstrapped Debian) and Python the twins use


def twin_lock_name(lock: str, kind: str = "cpu") -> str:
    """`X.{arch}.lock` -> `X.twin-cpu.{arch}.lock` (`X.lock` -> `X.twin-cpu.lock`)."""
    stem = lock.removesuffix(".lock")
    if stem.endswith(".{arch}"):
        return f"{stem.removesuffix('.{arch}')}.twin-{kind}.{{arch}}.lock"
    return f"{stem}.twin-{kind}.lock"


def pinned_from(real: LoadedSpec) -> LoadedSpec:
    """The real lock whose pins the twin keeps: the same architecture's, else aarch64's."""
    from llm.env.spec import load_spec_file

    if real.lock_path.is_file() or "{arch}" not in real.spec.lock:
        return real
    return load_spec_file(real.path, "aarch64")


def twin_pins(real: LoadedSpec) -> list[str]:
    """`name==version` of every package the twin keeps from the real lock."""
    source = pinned_from(real)
    return [f"{e.name}=={e.version}" for e in source.lock if canonicalize_name(e.name) not in NPU_ONLY]


def _kept(requirements: list[str]) -> list[str]:
    return [r for r in requirements if canonicalize_name(PIN_RE.match(r).group(1)) not in NPU_ONLY]


def make_twin(real: LoadedSpec, kind: str = "cpu") -> LoadedSpec:
    """The ``kind`` twin of an npu spec (only ``cpu`` exists)."""
    if kind not in TWINS:
        raise NpuboxError(f"--twin {kind!r}: expected one of {', '.join(TWINS)}")
    spec = real.spec
    if spec.accelerator != "npu":
        raise NpuboxError(f"env {real.name!r} is a {spec.accelerator} stack: only Ascend (npu) specs have a CPU twin")
    cpu = load_spec(CPU_ENV, real.path.parent, arch=real.arch)
    base = cpu.spec.base
    if base.bootstrap is None:
        raise NpuboxError(f"{cpu.path}: field `base.bootstrap` is missing: the twins bootstrap the CPU env's base")
    twin = spec.model_copy(
        update={
            "name": f"{spec.name}-twin-{kind}",
            "description": f"CPU twin of {spec.name}: {spec.description}",
            "accelerator": "cpu",
            "base": base.model_copy(update={"bootstrap": base.bootstrap.with_packages(BUILD_PACKAGES), "digest": None}),
            "python": cpu.spec.python,
            "requirements": _kept(spec.requirements),
            "site_wheels": _kept(spec.site_wheels),
            "cann": None,
            "lock": twin_lock_name(spec.lock, kind),
            "env": {**spec.env, "NPUBOX_TWIN_OF": spec.name},
        }
    )
    return LoadedSpec(twin, real.path, real.arch, twin_of=real)


def differences(twin: LoadedSpec) -> list[str]:
    """What the twin has that its real stack has not, one phrase each (plan, labels, spec.json)."""
    real, spec = twin.twin_of.spec, twin.spec
    out = []
    if real.python != spec.python:
        out.append(f"Python {spec.python} (real: {real.python})")
    dropped = sorted(n for n in pinned_from(twin.twin_of).known_pins() if n in NPU_ONLY)
    if dropped:
        out.append("without " + ", ".join(dropped) + " (Ascend-only)")
    pins = {**twin.requirement_pins(), **twin.site_wheel_pins()}
    if pins.get("torch"):
        out.append(f"torch {pins['torch']} runs its CPU kernels (real: with torch_npu on NPUs)")
    if pins.get("mindspore") or spec.engine == "mindformers":
        from llm.mindformers.cpu import SHIMS

        what = f"MindSpore {pins['mindspore']}" if pins.get("mindspore") else "MindSpore"
        out.append(f"{what} runs its CPU backend, data parallel only (real: Ascend)")
        out += [f"CPU shim: {shim}" for shim in SHIMS]
    if real.cann:
        out.append(f"no CANN (real: {real.cann.version})")
    out.append(f"base {spec.base.image} or its debootstrapped {spec.base.bootstrap.suite} (real: {real.base.image})")
    return out
