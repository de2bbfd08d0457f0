"""Every target x {cpu, cuda-mcore, an Ascend env} x {1, 2, 4 nodes}, as `invoke manifest` renders it: the
Kubernetes jobs valid against the operators' own CRDs (tests/crds, checked as the API server prunes), each pod the
sealed run of its env (securityContext, read-only driver mounts, tmpfs /tmp, node selection) asking for its
accelerator's device; the Slurm script a valid shell script that starts one `invoke run` per node."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from _crds import FILES, crd, sha256_listed, sha256_of
from llm.env import commands
from llm.errors import NpuboxError
from llm.manifest.job import DNS1035_LABEL

ASCEND_ENV = "ascend-mindspeed-llm-2.0.0"
ENVS = {"cpu": ("cpu", "tiny"), "cuda-mcore": ("cuda", "tiny"), ASCEND_ENV: ("npu", "qwen25-7b")}
KINDS = {"ascendjob": "AscendJob", "pytorchjob": "PyTorchJob"}
DEVICE = {"npu": ("huawei.com/Ascend910", 8), "cuda": ("nvidia.com/gpu", 8), "cpu": None}
ARCH = {"cpu": "amd64", "cuda": "amd64", "npu": "arm64"}  # the spec's first architecture, as kubelet labels it
ACCELERATOR_NODES = {"npu": {"accelerator": "huawei-Ascend910"}, "cuda": {"nvidia.com/gpu.present": "true"}, "cpu": {}}
DRIVER = ["/usr/local/Ascend/driver", "/usr/local/dcmi", "/usr/local/bin/npu-smi", "/etc/ascend_install.info"]
MATRIX = [(t, e, n) for t in ("ascendjob", "pytorchjob", "slurm") for e in ENVS for n in (1, 2, 4)]


@pytest.mark.parametrize("kind", sorted(FILES))
def test_the_vendored_crds_are_the_upstream_files(kind):
    assert sha256_of(FILES[kind]) == sha256_listed(FILES[kind])


def pods(doc: dict) -> list[dict]:
    specs = doc["spec"].get("pytorchReplicaSpecs") or doc["spec"]["replicaSpecs"]
    return [spec["template"]["spec"] for spec in specs.values()]


def check_sealed_pod(pod: dict, accelerator: str) -> None:
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 1000 and security["runAsGroup"] == 1000
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert security.get("supplementalGroups") == ([1000] if accelerator == "npu" else None)
    assert pod["automountServiceAccountToken"] is False
    assert pod["nodeSelector"] == {"kubernetes.io/arch": ARCH[accelerator], **ACCELERATOR_NODES[accelerator]}
    (container,) = pod["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert volumes[mounts["/tmp"]["name"]]["emptyDir"]["medium"] == "Memory"
    assert volumes[mounts["/dev/shm"]["name"]]["emptyDir"]["medium"] == "Memory"
    assert volumes[mounts["/workspace"]["name"]]["persistentVolumeClaim"] == {"claimName": "npubox-workspace"}
    host_paths = {
        m: volumes[mounts[m]["name"]]["hostPath"]["path"] for m in mounts if "hostPath" in volumes[mounts[m]["name"]]
    }
    assert host_paths == ({p: p for p in DRIVER} if accelerator == "npu" else {})
    assert all(mounts[m].get("readOnly") is True for m in host_paths)
    writable = [m for m, mount in mounts.items() if not mount.get("readOnly") and m not in ("/tmp", "/dev/shm")]
    assert writable == ["/workspace"]
    if DEVICE[accelerator] is None:
        assert "resources" not in container
    else:
        resource, count = DEVICE[accelerator]
        assert container["resources"] == {"limits": {resource: count}, "requests": {resource: count}}


@pytest.mark.parametrize("target, env, nodes", MATRIX)
def test_every_target_env_and_node_count(target, env, nodes, tmp_path):
    accelerator, model = ENVS[env]
    if target == "ascendjob" and accelerator != "npu":
        with pytest.raises(NpuboxError, match="MindCluster's job for Ascend NPUs"):
            commands.manifest(env, target, nodes, model, "pretrain", None, [])
        return
    text = commands.manifest(env, target, nodes, model, "pretrain", None, ["--train-iters", "10"])
    if target == "slurm":
        script = tmp_path / "job.sbatch"
        script.write_text(text)
        subprocess.run(["bash", "-n", str(script)], check=True)
        assert f"#SBATCH --nodes={nodes}\n" in text and f"srun --nodes={nodes} --ntasks-per-node=1" in text
        # Devices are found on each node by its own `invoke run`, never written into the script.
        assert "davinci" not in text and "--gpus" not in text and "docker run" not in text
        return
    doc = yaml.safe_load(text)
    assert crd(KINDS[target]).errors(doc) == []
    assert DNS1035_LABEL.fullmatch(doc["metadata"]["name"])
    specs = doc["spec"].get("pytorchReplicaSpecs") or doc["spec"]["replicaSpecs"]
    assert specs["Master"]["replicas"] == 1 and sum(s["replicas"] for s in specs.values()) == nodes
    assert ("Worker" in specs) == (nodes > 1)
    for pod in pods(doc):
        check_sealed_pod(pod, accelerator)


@pytest.mark.parametrize("kind, target", [("PyTorchJob", "pytorchjob"), ("AscendJob", "ascendjob")])
def test_the_validators_refuse_what_the_api_server_would_drop_or_reject(kind, target):
    """The check can fail: a field the server would prune, a wrong type, a replica count past int32."""
    doc = yaml.safe_load(commands.manifest(ASCEND_ENV, target, 2, "qwen25-7b", "pretrain", None, []))
    schema = crd(kind)
    assert schema.errors(doc) == []
    master = (doc["spec"].get("pytorchReplicaSpecs") or doc["spec"]["replicaSpecs"])["Master"]
    container = master["template"]["spec"]["containers"][0]
    container["securityContext"]["readOnlyRootFileSystem"] = True  # misspelt: pruned, the root stays writable
    master["template"]["spec"]["securityContext"]["runAsNonRoot"] = "yes"
    master["replicas"] = 2**31
    errors = "\n".join(schema.errors(doc))
    assert "'readOnlyRootFileSystem' was unexpected" in errors
    assert "'yes' is not of type 'boolean'" in errors
    assert "is not a 'int32'" in errors
