"""Manifests for running a phase past one machine, on engines that already schedule clusters: a MindCluster
``AscendJob`` (npu envs), a Kubeflow ``PyTorchJob`` (:mod:`llm.manifest.kubernetes`) or an sbatch script that runs
`invoke run` on each node (:mod:`llm.manifest.slurm`). Each is the sealed run of its env; the job is checked first
(:mod:`llm.manifest.job`). Light: no torch.

    render_manifest(Job(target="slurm", env="cpu", accelerator="cpu", arch="x86_64", image="npubox/cpu:…",
                        model="tiny", phase="pretrain", launch=Launch(nnodes=2)))
"""

from __future__ import annotations

from llm.manifest.job import DEVICE_RESOURCES, TARGETS, Job, check_image, check_target

__all__ = ["DEVICE_RESOURCES", "TARGETS", "Job", "render_manifest"]


def render_manifest(job: Job) -> str:
    check_target(job.target, job.accelerator)
    check_image(job.image)
    if job.target == "slurm":
        from llm.manifest.slurm import render_slurm

        return render_slurm(job)
    from llm.manifest.kubernetes import render_ascendjob, render_pytorchjob

    return render_ascendjob(job) if job.target == "ascendjob" else render_pytorchjob(job)
