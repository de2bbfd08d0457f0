"""The Kubernetes jobs: a MindCluster ``AscendJob`` (npu envs) and a Kubeflow ``PyTorchJob``, each pod the sealed run
of `invoke run` in Kubernetes' words.

- ``ascendjob``: mindxdl.gitee.com/v1 (Ascend/mind-cluster, component/ascend-operator), scheduled by Volcano; one
  Master and ``nodes - 1`` Worker pods, container ``ascend``, port ``ascendjob-port``, ``ASCEND_VISIBLE_DEVICES``
  from the device plugin's annotation.
- ``pytorchjob``: kubeflow.org/v1 (kubeflow/training-operator v1.9.0); container ``pytorch``, port
  ``pytorchjob-port``.

Both operators give every pod ``MASTER_ADDR``, ``MASTER_PORT`` (the named port) and its index as ``RANK`` (Master =
0); the pod hands them to ``python -m llm launch``, which starts one process per device. Sealed as a local run is:
the image's non-root user, no privilege escalation, no capabilities, the runtime's seccomp profile, a read-only root
with a memory-backed ``/tmp``, the workspace claim as the only writable volume, the driver's paths mounted read-only
and the group owning the cards added (npu), the env's own device resource, and nodes of the image's architecture and
accelerator.
"""

from __future__ import annotations

import copy

import yaml

from llm.env.container import IMAGE_UID
from llm.env.devices import DRIVER_PATHS
from llm.env.multinode import phase_argv
from llm.manifest.job import DEVICE_RESOURCES, Job
from llm.workspace import DEFAULT_ROOT

WORKSPACE = DEFAULT_ROOT  # mounted where the phases look for it
DEFAULT_CLAIM = "npubox-workspace"
# The node's own rank and node 0's address, as the operators set them in each pod's environment. Kubernetes expands
# `$(VAR)` and reduces `$$` in command and args; this script has neither, and the arguments are escaped.
NODE_SCRIPT = (
    'exec python -m llm launch --node-rank "$RANK" --master-addr "$MASTER_ADDR" --master-port "$MASTER_PORT" "$@"'
)
# The well-known node label kubelet sets (kubernetes.io/arch) for each architecture npubox builds.
K8S_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
# Labels that mark accelerator nodes: MindCluster's for Atlas 910 nodes (Ascend/mind-cluster v7.3.0,
# component/ascend-device-plugin/build/ascendplugin-910.yaml), NVIDIA GPU feature discovery's for GPU nodes.
ACCELERATOR_LABELS = {"npu": {"accelerator": "huawei-Ascend910"}, "cuda": {"nvidia.com/gpu.present": "true"}, "cpu": {}}
# What `docker run --tmpfs /tmp:...,size=4g` gives a local run (llm.env.container.sealed_flags).
TMP_SIZE = "4Gi"
# The driver's paths, as llm.env.devices mounts them read-only into a local run: folders, and the two files.
DRIVER_FILES = {"usr/local/bin/npu-smi", "etc/ascend_install.info"}


def quantity(docker_size: str) -> str:
    """docker's size (``64g``: binary units) as a Kubernetes quantity (``64Gi``)."""
    units = {"k": "Ki", "m": "Mi", "g": "Gi", "b": ""}
    suffix = docker_size[-1]
    return docker_size[:-1] + units[suffix] if suffix in units else docker_size


def escape_expansion(arg: str) -> str:
    """An argument Kubernetes passes literally: it would expand `$(VAR)` and reduce `$$` to `$`."""
    return arg.replace("$", "$$")


def pod_security_context(job: Job) -> dict:
    context = {
        "runAsNonRoot": True,
        "runAsUser": IMAGE_UID,
        "runAsGroup": IMAGE_UID,
        "seccompProfile": {"type": "RuntimeDefault"},  # docker's default profile, which a local run has
    }
    if job.accelerator == "npu":
        context["supplementalGroups"] = [job.device_gid]  # the cards' group, as `--group-add` does locally
    return context


CONTAINER_SECURITY_CONTEXT = {
    "allowPrivilegeEscalation": False,  # --security-opt no-new-privileges
    "privileged": False,
    "readOnlyRootFilesystem": True,  # --read-only
    "capabilities": {"drop": ["ALL"]},  # --cap-drop ALL
}


def driver_volumes() -> tuple[list[dict], list[dict]]:
    """The Ascend driver's paths from the node, read-only (volumes, volumeMounts)."""
    volumes, mounts = [], []
    for i, path in enumerate(DRIVER_PATHS):
        name = f"ascend-driver-{i}"
        kind = "File" if path in DRIVER_FILES else "Directory"
        volumes.append({"name": name, "hostPath": {"path": "/" + path, "type": kind}})
        mounts.append({"name": name, "mountPath": "/" + path, "readOnly": True})
    return volumes, mounts


def pod_template(job: Job, container_name: str, port_name: str, labels: dict, ascend_env: bool) -> dict:
    env = [{"name": "NPUBOX_WORKSPACE", "value": WORKSPACE}]
    if ascend_env:
        # ascend-docker-runtime mounts the cards the device plugin allocated (named in this annotation).
        annotation = f"metadata.annotations['{DEVICE_RESOURCES['npu']}']"
        env.append({"name": "ASCEND_VISIBLE_DEVICES", "valueFrom": {"fieldRef": {"fieldPath": annotation}}})
    args = [*job.launch.job_argv(), *phase_argv(job.model, job.phase, list(job.extra_args))]
    mounts = [
        {"name": "workspace", "mountPath": WORKSPACE},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]
    volumes = [
        {"name": "workspace", "persistentVolumeClaim": {"claimName": job.workspace or DEFAULT_CLAIM}},
        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": TMP_SIZE}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": quantity(job.shm_size)}},
    ]
    if job.accelerator == "npu":
        driver, driver_mounts = driver_volumes()
        volumes += driver
        mounts += driver_mounts
    container = {
        "name": container_name,
        "image": job.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/bash", "-c", NODE_SCRIPT, "npubox-node"],
        "args": [escape_expansion(a) for a in args],
        "env": env,
        "ports": [{"containerPort": job.launch.master_port, "name": port_name}],
        "securityContext": copy.deepcopy(CONTAINER_SECURITY_CONTEXT),
        "volumeMounts": mounts,
    }
    resource = DEVICE_RESOURCES[job.accelerator]
    if resource:
        container["resources"] = {
            "limits": {resource: job.devices_per_node},
            "requests": {resource: job.devices_per_node},
        }
    return {
        "metadata": {"labels": labels},
        "spec": {
            "automountServiceAccountToken": False,  # the phases never talk to the Kubernetes API
            "securityContext": pod_security_context(job),
            "nodeSelector": {"kubernetes.io/arch": K8S_ARCH[job.arch], **ACCELERATOR_LABELS[job.accelerator]},
            "containers": [container],
            "volumes": volumes,
        },
    }


def replicas(nodes: int, template: dict) -> dict:
    specs = {"Master": {"replicas": 1, "restartPolicy": "Never", "template": copy.deepcopy(template)}}
    if nodes > 1:  # a copy each: no YAML anchors in what users read
        specs["Worker"] = {"replicas": nodes - 1, "restartPolicy": "Never", "template": copy.deepcopy(template)}
    return specs


def render_ascendjob(job: Job) -> str:
    ring = {"ring-controller.atlas": "ascend-910b"}
    template = pod_template(job, "ascend", "ascendjob-port", ring, ascend_env=True)
    doc = {
        "apiVersion": "mindxdl.gitee.com/v1",
        "kind": "AscendJob",
        "metadata": {"name": job.name, "labels": {"framework": "pytorch", **ring}},
        "spec": {
            "schedulerName": "volcano",
            "runPolicy": {"schedulingPolicy": {"minAvailable": job.nodes, "queue": "default"}},
            "successPolicy": "AllWorkers",
            "replicaSpecs": replicas(job.nodes, template),
        },
    }
    return yaml.safe_dump(doc, sort_keys=False)


def render_pytorchjob(job: Job) -> str:
    template = pod_template(job, "pytorch", "pytorchjob-port", {"app": job.name}, ascend_env=False)
    doc = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": job.name},
        "spec": {"runPolicy": {"cleanPodPolicy": "None"}, "pytorchReplicaSpecs": replicas(job.nodes, template)},
    }
    return yaml.safe_dump(doc, sort_keys=False)
