"""Manifests for running a phase past one machine, on engines that already schedule clusters.

    render_manifest("ascendjob", nodes=4, image="npubox/ascend-mindspeed-llm-2.0.0:…", model="qwen25-7b",
                    phase="pretrain", devices_per_node=8, extra_args=["--train-iters", "100"])

- ``ascendjob`` (npu envs only): a MindCluster ``AscendJob`` (mindxdl.gitee.com/v1, scheduled by Volcano):
  one Master and ``nodes - 1`` Worker pods, container ``ascend``, ``huawei.com/Ascend910`` devices per pod,
  ``ASCEND_VISIBLE_DEVICES`` from the device plugin's annotation, port 2222 ``ascendjob-port``.
- ``pytorchjob``: a Kubeflow ``PyTorchJob`` (kubeflow.org/v1): Master + Workers, container
  ``pytorch``, the device resource of the env's accelerator (:data:`DEVICE_RESOURCES`).
- ``slurm``: an sbatch script: one task per node, each starting the image with ``docker run`` on the
  host network with the accelerator's devices, node 0's host as master.

Both operators give every pod ``MASTER_ADDR``, ``MASTER_PORT`` and its pod index as ``RANK``
(Master = 0); the pod command hands them to ``python -m llm launch`` as ``--master-addr``,
``--master-port`` and ``--node-rank``, and launch starts one process per device. The workspace
(a PersistentVolumeClaim in Kubernetes, a shared directory under Slurm) is mounted at
``/workspace``, the only writable place, as in single-node runs. Light: no torch.
"""

from __future__ import annotations

import copy
import re
import shlex
from collections.abc import Sequence

import yaml

from llm.errors import NpuboxError
from llm.workspace import DEFAULT_ROOT

TARGETS = ("ascendjob", "pytorchjob", "slurm")
# The Kubernetes extended resource each accelerator's device plugin offers (CPU: none is asked for).
DEVICE_RESOURCES = {"npu": "huawei.com/Ascend910", "cuda": "nvidia.com/gpu", "cpu": None}
ASCEND_RESOURCE = DEVICE_RESOURCES["npu"]
WORKSPACE = DEFAULT_ROOT  # mounted where the phases look for it
MASTER_PORT = 29500
NOT_IN_DNS_LABEL = re.compile(r"[^a-z0-9-]+")


def job_name(model: str, phase: str) -> str:
    """A Kubernetes object name (DNS-1123 label) for the run."""
    return NOT_IN_DNS_LABEL.sub("-", f"npubox-{model}-{phase}".lower()).strip("-")[:63]


def launch_command(
    model: str, phase: str, nodes: int, extra_args: Sequence[str], node_rank: str, master_addr: str, master_port: str
) -> str:
    """The shell line a pod / task runs. ``node_rank`` etc. are shell expressions (e.g. ``"${RANK}"``),
    left unquoted so the shell expands them; everything the user gave is quoted."""
    fixed = ["python", "-m", "llm", "launch", "--nnodes", str(nodes)]
    dynamic = f'--node-rank "{node_rank}" --master-addr "{master_addr}" --master-port "{master_port}"'
    phase_part = shlex.join([phase, "--model", model, *extra_args])
    return f"exec {shlex.join(fixed)} {dynamic} {phase_part}"


def _pod_template(
    container: str,
    image: str,
    command: str,
    devices: int,
    workspace_claim: str,
    labels: dict,
    accelerator: str,
    ascend_env: bool,
    port: dict | None,
) -> dict:
    env = [{"name": "NPUBOX_WORKSPACE", "value": WORKSPACE}]
    if ascend_env:
        # ascend-docker-runtime mounts the cards the device plugin allocated (named in this annotation).
        env.append(
            {
                "name": "ASCEND_VISIBLE_DEVICES",
                "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{ASCEND_RESOURCE}']"}},
            }
        )
    spec_container = {
        "name": container,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "env": env,
        "command": ["/bin/bash", "-c", command],
        "volumeMounts": [{"name": "workspace", "mountPath": WORKSPACE}, {"name": "dshm", "mountPath": "/dev/shm"}],
    }
    resource = DEVICE_RESOURCES[accelerator]
    if resource:
        spec_container["resources"] = {"limits": {resource: devices}, "requests": {resource: devices}}
    if port:
        spec_container["ports"] = [port]
    return {
        "metadata": {"labels": labels},
        "spec": {
            "containers": [spec_container],
            "volumes": [
                {"name": "workspace", "persistentVolumeClaim": {"claimName": workspace_claim}},
                {"name": "dshm", "emptyDir": {"medium": "Memory"}},
            ],
        },
    }


def _replicas(nodes: int, template: dict) -> dict:
    specs = {"Master": {"replicas": 1, "restartPolicy": "Never", "template": copy.deepcopy(template)}}
    if nodes > 1:  # a copy each: no YAML anchors in what users read
        specs["Worker"] = {"replicas": nodes - 1, "restartPolicy": "Never", "template": copy.deepcopy(template)}
    return specs


def render_ascendjob(
    nodes: int, image: str, model: str, phase: str, devices: int, extra_args: Sequence[str], workspace_claim: str
) -> str:
    name = job_name(model, phase)
    command = launch_command(model, phase, nodes, extra_args, "${RANK}", "${MASTER_ADDR}", "${MASTER_PORT}")
    labels = {"ring-controller.atlas": "ascend-910b"}
    template = _pod_template(
        "ascend",
        image,
        command,
        devices,
        workspace_claim,
        labels,
        "npu",
        ascend_env=True,
        port={"containerPort": 2222, "name": "ascendjob-port"},
    )
    doc = {
        "apiVersion": "mindxdl.gitee.com/v1",
        "kind": "AscendJob",
        "metadata": {"name": name, "labels": {"framework": "pytorch", "ring-controller.atlas": "ascend-910b"}},
        "spec": {
            "schedulerName": "volcano",
            "runPolicy": {"schedulingPolicy": {"minAvailable": nodes, "queue": "default"}},
            "successPolicy": "AllWorkers",
            "replicaSpecs": _replicas(nodes, template),
        },
    }
    return yaml.safe_dump(doc, sort_keys=False)


def render_pytorchjob(
    nodes: int,
    image: str,
    model: str,
    phase: str,
    devices: int,
    extra_args: Sequence[str],
    workspace_claim: str,
    accelerator: str,
) -> str:
    name = job_name(model, phase)
    command = launch_command(model, phase, nodes, extra_args, "${RANK}", "${MASTER_ADDR}", "${MASTER_PORT}")
    template = _pod_template(
        "pytorch", image, command, devices, workspace_claim, {"app": name}, accelerator, ascend_env=False, port=None
    )
    doc = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": name},
        "spec": {"runPolicy": {"cleanPodPolicy": "None"}, "pytorchReplicaSpecs": _replicas(nodes, template)},
    }
    return yaml.safe_dump(doc, sort_keys=False)


ASCEND_DOCKER_FLAGS = [
    "--device=/dev/davinci_manager",
    "--device=/dev/devmm_svm",
    "--device=/dev/hisi_hdc",
    "-v=/usr/local/Ascend/driver:/usr/local/Ascend/driver:ro",
    "-v=/usr/local/dcmi:/usr/local/dcmi:ro",
    "-v=/usr/local/bin/npu-smi:/usr/local/bin/npu-smi:ro",
    "-v=/etc/ascend_install.info:/etc/ascend_install.info:ro",
]


def slurm_device_flags(accelerator: str, devices: int) -> list[str]:
    """The `docker run` flags that hand a node's accelerators to the container (as llm.env.devices does)."""
    if accelerator == "npu":
        return [f"--device=/dev/davinci{i}" for i in range(devices)] + ASCEND_DOCKER_FLAGS
    if accelerator == "cuda":
        return ["--gpus=all"]
    return []


def render_slurm(
    nodes: int,
    image: str,
    model: str,
    phase: str,
    devices: int,
    extra_args: Sequence[str],
    workspace_dir: str,
    accelerator: str,
) -> str:
    name = job_name(model, phase)
    command = launch_command(model, phase, nodes, extra_args, "${SLURM_NODEID}", "${MASTER_ADDR}", "${MASTER_PORT}")
    device_flags = slurm_device_flags(accelerator, devices)
    resource = DEVICE_RESOURCES[accelerator]
    per_node = f"{devices} x {resource} per node" if resource else "no accelerator (cpu)"
    lines = [
        "docker run --rm --network host --shm-size 64g --read-only --tmpfs /tmp",
        f'-e HOME=/tmp -e NPUBOX_WORKSPACE={WORKSPACE} -v "$WORKSPACE_DIR":{WORKSPACE}',
        *(" ".join(device_flags[i : i + 4]) for i in range(0, len(device_flags), 4)),
        "-e MASTER_ADDR -e MASTER_PORT -e SLURM_NODEID",
        f'{shlex.quote(image)} /bin/bash -c "$LAUNCH"',
    ]
    docker = " \\\n    ".join(lines)
    return f"""#!/bin/bash
#SBATCH --job-name={name}
#SBATCH --nodes={nodes}
#SBATCH --ntasks-per-node=1
#SBATCH --exclusive
# {per_node}; inside the image `python -m llm launch` starts one process per device.
set -euo pipefail

MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_PORT={MASTER_PORT}
WORKSPACE_DIR={workspace_dir}  # shared by all nodes: models/ data/ checkpoints/ logs/
export MASTER_ADDR MASTER_PORT

# Expanded inside the container, where srun's SLURM_NODEID is this node's rank.
LAUNCH={shlex.quote(command)}

srun --ntasks-per-node=1 --kill-on-bad-exit=1 \\
  {docker}
"""


def render_manifest(
    target: str,
    nodes: int,
    image: str,
    model: str,
    phase: str = "pretrain",
    devices_per_node: int = 8,
    extra_args: Sequence[str] = (),
    workspace: str | None = None,
    *,
    accelerator: str,
) -> str:
    """Render ``target`` (ascendjob | pytorchjob | slurm) for ``nodes`` nodes running ``phase`` of
    ``model`` in ``image``, whose env's accelerator is ``accelerator`` (npu | cuda | cpu). ``workspace``:
    the PersistentVolumeClaim name (Kubernetes, default ``npubox-workspace``) or the shared directory
    (Slurm, default ``$SLURM_SUBMIT_DIR/workspace``)."""
    if target not in TARGETS:
        raise NpuboxError(f"--target {target!r}: expected one of {', '.join(TARGETS)}")
    if accelerator not in DEVICE_RESOURCES:
        raise NpuboxError(f"accelerator {accelerator!r}: expected one of {', '.join(DEVICE_RESOURCES)}")
    if target == "ascendjob" and accelerator != "npu":
        raise NpuboxError(
            f"--target ascendjob is MindCluster's job for Ascend NPUs, and this env's accelerator is {accelerator}: "
            "use --target pytorchjob or slurm"
        )
    if nodes < 1:
        raise NpuboxError(f"--nodes {nodes}: expected at least 1")
    if devices_per_node < 1:
        raise NpuboxError(f"devices per node {devices_per_node}: expected at least 1")
    if not image or any(c.isspace() for c in image):
        raise NpuboxError(f"image {image!r}: expected an image reference such as npubox/cpu:0.1.0-abcdef123456")
    extra = [str(a) for a in extra_args]
    if target == "slurm":
        return render_slurm(
            nodes,
            image,
            model,
            phase,
            devices_per_node,
            extra,
            shlex.quote(workspace) if workspace else '"${SLURM_SUBMIT_DIR}/workspace"',
            accelerator,
        )
    claim = workspace or "npubox-workspace"
    if target == "ascendjob":
        return render_ascendjob(nodes, image, model, phase, devices_per_node, extra, claim)
    return render_pytorchjob(nodes, image, model, phase, devices_per_node, extra, claim, accelerator)
