"""One multi-node job as the manifests render it, checked before anything is rendered: every number, name and
option is refused here with the rule it breaks, as Kubernetes or Slurm would refuse it later (or worse, accept it)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from llm.env.multinode import Launch
from llm.errors import NpuboxError
from llm.torchrun import parse_env_item

TARGETS = ("ascendjob", "pytorchjob", "slurm")
# The Kubernetes extended resource each accelerator's device plugin offers (CPU: none is asked for).
DEVICE_RESOURCES = {"npu": "huawei.com/Ascend910", "cuda": "nvidia.com/gpu", "cpu": None}
# A replica count and a pod's resource count are int32 in Kubernetes (PyTorchJob / AscendJob CRDs: `format: int32`).
MAX_COUNT = 2**31 - 1
MAX_PORT = 65535
# Kubernetes' DNS-1123 subdomain (k8s.io/apimachinery pkg/util/validation/validation.go, IsDNS1123Subdomain): what a
# PersistentVolumeClaim may be named.
DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
DNS1123_SUBDOMAIN_MAX = 253
# Kubernetes' DNS-1035 label (IsDNS1035Label), which a PyTorchJob's name must be (training-operator v1.9.0
# pkg/webhooks/pytorch/pytorchjob_webhook.go); its pods and services are named `<job>-worker-<i>`, so the job
# leaves room for that suffix.
DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
JOB_NAME_MAX = 63 - len("-worker-") - len(str(MAX_COUNT))
NOT_IN_DNS_LABEL = re.compile(r"[^a-z0-9-]+")
DEFAULT_DEVICES = 8  # an Atlas 800T A2, a DGX
# The HwHiAiUser group that owns /dev/davinci* is 1000 where MindCluster's images make it (Ascend/mind-cluster v7.3.0,
# component/ascend-device-plugin/build/Dockerfile-310P-1usoc: `groupadd -g 1000 HwHiAiUser`); a site whose driver
# made another gives it with --device-gid (`stat -c %g /dev/davinci0` on a node).
DEFAULT_DEVICE_GID = 1000
MAX_GID = 2**32 - 2  # (uid_t)-1 means "no group"


@dataclass(frozen=True)
class Job:
    """What every target renders from: the env's image and accelerator, the phase, the nodes, the launch options."""

    target: str
    env: str
    accelerator: str  # npu | cuda | cpu
    arch: str  # the architecture the image is built for (the spec's first): the nodes' architecture
    image: str
    model: str
    phase: str
    launch: Launch  # nnodes, master port, socket interface, the workers' environment
    extra_args: tuple[str, ...] = ()
    devices_per_node: int | None = None  # Kubernetes' device request; None: none (cpu) or Slurm (the node's own)
    workspace: str | None = None  # a PersistentVolumeClaim (Kubernetes) or a shared folder (Slurm); None: default
    device_gid: int | None = None  # npu: the group owning /dev/davinci* on the nodes
    shm_size: str = "1g"  # the spec's, as docker's --shm-size reads it

    @property
    def nodes(self) -> int:
        return self.launch.nnodes

    @property
    def name(self) -> str:
        return job_name(self.model, self.phase)


def job_name(model: str, phase: str) -> str:
    """The job's name: a DNS-1035 label with room for the operators' `-worker-<i>` suffix, also a Slurm job name."""
    return NOT_IN_DNS_LABEL.sub("-", f"npubox-{model}-{phase}".lower())[:JOB_NAME_MAX].strip("-")


def whole_number(option: str, value: int | str | None, low: int, high: int, why: str = "") -> int | None:
    """``value`` as an int from ``low`` to ``high``; None stays None. Refused with the range otherwise."""
    if value is None:
        return None
    text = str(value).strip()
    if not re.fullmatch(r"[+-]?\d+", text) or not low <= int(text) <= high:
        raise NpuboxError(f"{option} {value!r}: expected a whole number from {low} to {high}{why}")
    return int(text)


def check_claim_name(claim: str) -> str:
    if len(claim) > DNS1123_SUBDOMAIN_MAX or not DNS1123_SUBDOMAIN.fullmatch(claim):
        raise NpuboxError(
            f"--workspace {claim!r}: on Kubernetes the workspace is a PersistentVolumeClaim, and a claim's name must "
            f"be a DNS-1123 subdomain: at most {DNS1123_SUBDOMAIN_MAX} lowercase letters, digits, '-' and '.', "
            "starting and ending with a letter or digit (e.g. npubox-workspace)"
        )
    return claim


def check_socket_ifname(name: str | None) -> str | None:
    """Interface names, or HCCL/NCCL's patterns of them (`eth0,eth1`, `^docker`, `=eth0`): one word, printable."""
    if name is not None and (not name or any(c.isspace() or not c.isprintable() for c in name)):
        raise NpuboxError(
            f"--socket-ifname {name!r}: expected a network interface name such as eth0 (or a list such as eth0,eth1), "
            "without spaces or control characters"
        )
    return name


def check_target(target: str, accelerator: str) -> None:
    if target not in TARGETS:
        raise NpuboxError(f"--target {target!r}: expected one of {', '.join(TARGETS)}")
    if accelerator not in DEVICE_RESOURCES:
        raise NpuboxError(f"accelerator {accelerator!r}: expected one of {', '.join(DEVICE_RESOURCES)}")
    if target == "ascendjob" and accelerator != "npu":
        raise NpuboxError(
            f"--target ascendjob is MindCluster's job for Ascend NPUs, and this env's accelerator is {accelerator}: "
            "use --target pytorchjob or slurm"
        )


def check_image(image: str) -> str:
    if not image or any(c.isspace() for c in image):
        raise NpuboxError(f"image {image!r}: expected an image reference such as npubox/cpu:0.1.0-abcdef123456")
    return image


def devices_per_node(target: str, accelerator: str, value: int | str | None) -> int | None:
    """The device count each pod requests; None where nothing is requested (cpu) or the node's own are used (Slurm)."""
    if value is not None and accelerator == "cpu":
        raise NpuboxError(f"--devices-per-node {value!r} was given, but this env runs on the CPU and uses no device")
    if value is not None and target == "slurm":
        raise NpuboxError(
            f"--devices-per-node {value!r}: under Slurm each node's `invoke run` uses every device it finds there "
            "(the job has its nodes --exclusive); --devices-per-node is the request of a Kubernetes pod"
        )
    if accelerator == "cpu" or target == "slurm":
        return None
    count = whole_number("--devices-per-node", value, 1, MAX_COUNT, " (a Kubernetes resource count)")
    return DEFAULT_DEVICES if count is None else count


def device_gid(accelerator: str, value: int | str | None) -> int | None:
    """npu: the group the pods join to open the cards; the other accelerators have none."""
    if accelerator != "npu":
        if value is not None:
            raise NpuboxError(
                f"--device-gid {value!r}: the group of the Ascend cards; this env's accelerator is {accelerator}"
            )
        return None
    gid = whole_number("--device-gid", value, 1, MAX_GID, " (the group owning /dev/davinci* on the nodes; not root's)")
    return DEFAULT_DEVICE_GID if gid is None else gid


def launch_options(
    nodes: int | str, master_port: int | str | None, socket_ifname: str | None, worker_env: tuple[str, ...] | list[str]
) -> Launch:
    """The job's launch options from the command line's values, each checked."""
    count = whole_number("--nodes", nodes, 1, MAX_COUNT, " (a Kubernetes replica count is an int32)")
    port = whole_number("--master-port", master_port, 1, MAX_PORT)
    for item in worker_env:
        parse_env_item(item, "--launch-env")
    kwargs = {"master_port": port} if port is not None else {}
    return Launch(
        nnodes=count, socket_ifname=check_socket_ifname(socket_ifname), worker_env=tuple(worker_env), **kwargs
    )
