"""The Ascend stacks: commits of release tags (never tag objects or branch heads), locks that cover
the pinned sources' own requirements, CPU twins whose pins equal the real stack's, and build plans
that miss nothing a user can get from a package index."""

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from _example_scripts import SOURCES, source_archive
from llm.env.plan import BuildInputs, make_plan
from llm.env.sources import check_commit_object
from llm.env.spec import Source, env_names, load_spec, parse_lock
from llm.env.twin import NPU_ONLY, differences, make_twin
from llm.errors import NpuboxError

REPO = Path(__file__).resolve().parents[2]
NPU_ENVS = [n for n in env_names() if load_spec(n).spec.accelerator == "npu"]

# Release tags peeled to their commits, read from the public repositories (`git rev-parse <tag>^{commit}`).
RELEASE_COMMITS = {
    "ascend-mindspeed-llm-2.0.0": {
        "MindSpeed": "dc83a031a2653341be1690013c11cfbf556155c5",  # v2.0.0_core_r0.8.0 (tag object 4be915ad...)
        "Megatron-LM": "baf94af3c667248865f23df73b9fb8e2395e6fd0",  # core_r0.8.0
        "MindSpeed-LLM": "3a712f58635be8825189c65a89f27a90dc458765",  # v2.0.0 (tag object bae4977b...)
    },
    "ascend-mindspeed-llm-2.3.0": {
        "MindSpeed": "f620a78bb1e532eeb021a5399f36817e1b3cc94f",  # v2.3.0_core_r0.12.1 (not the branch head 674226a)
        "Megatron-LM": "a845aa7e12b3a117e24c2352b9e3e60bad2e3a17",  # core_v0.12.1
        "MindSpeed-LLM": "1bdd97003882083da7c951fceedd71f96116be2f",  # v2.3.0
    },
    "ascend-mindspeed-llm-26.0.0": {
        "MindSpeed": "0ed973d6851a49d1396b0bc99e5621a1bf79e278",  # v26.0.0_core_r0.12.1
        "Megatron-LM": "a845aa7e12b3a117e24c2352b9e3e60bad2e3a17",  # core_v0.12.1
        "MindSpeed-LLM": "57c33296592ed12f59396e59461a5bd8d0d589d0",  # v26.0.0
    },
    "ascend-modellink-1.0": {
        "MindSpeed": "224ae35e8fc96778f957029d1371ddb623452a50",  # AscendSpeed at the commit ModelLink 1.0 uses
        "Megatron-LM": "bcce6f54e075e3c3374ea67adefe54f3f2da2b07",  # bcce6f
        "MindSpeed-LLM": "f33da62b9017d12aca8364137936ab0d014df428",  # ModelLink v1.0.RC1.0 (tag object 8349ad32...)
    },
    # mindspore-lab/mindformers: tag v1.3.2; branch r1.8.0 at the commit the mindformers 1.8.0 wheel records in
    # mindformers/.commit_id (the mirror has no r1.8.0 tag)
    "ascend-mindformers-1.3.2": {"mindformers": "024279c21923e555f7366940aed9017d13256052"},
    "ascend-mindformers-1.5.0": {"mindformers": "9fa6e2fb228d8d2dcff48e011ceb6ce685af255d"},  # branch r1.5.0: seed 001
    "ascend-mindformers-1.8.0": {"mindformers": "1a72d5583747857f6908c8bcfb3f2502f9f2e541"},
}
# What only the vendor distributes, per stack: the build plan names it missing with where to get it.
VENDOR_WHEELS = {
    "ascend-modellink-1.0": "site wheel apex==0.1+ascend",
    "ascend-mindformers-1.3.2": "site wheel mindspore==2.4.10",  # MindSpore 2.4.x and 2.6.0 are on no package index
    "ascend-mindformers-1.5.0": "site wheel mindspore==2.6.0",
}
TAG_OBJECTS = (
    "4be915ad6602f9060fa8d18e4f0f05d77020049c",
    "bae4977bd71d355fd21a51d45d262e4910205871",
    "8349ad32f4e7ec8575157fa93ad63d446e4cefb7",
    "674226a15a8214cc0c78f986b0b89fbe6b879ba1",
)


def test_the_four_ascend_stacks_are_there():
    assert NPU_ENVS == sorted(RELEASE_COMMITS)


@pytest.mark.parametrize("env", NPU_ENVS)
def test_sources_are_pinned_at_release_commits(env):
    spec = load_spec(env).spec
    assert {s.name: s.commit for s in spec.sources} == RELEASE_COMMITS[env]
    assert not {s.commit for s in spec.sources} & set(TAG_OBJECTS)
    assert spec.engine == ("mindformers" if "mindformers" in RELEASE_COMMITS[env] else "mindspeed-llm")


def _git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


def test_a_tag_object_is_refused_naming_its_commit(tmp_path):
    repo = tmp_path / "MindSpeed"
    repo.mkdir()
    _git(repo, "init", "--quiet")
    (repo / "setup.py").write_text("print('x')\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "--quiet", "-m", "release")
    commit = _git(repo, "rev-parse", "HEAD")
    _git(repo, "tag", "-a", "v2.0.0_core_r0.8.0", "-m", "release")
    tag_object = _git(repo, "rev-parse", "v2.0.0_core_r0.8.0")
    assert tag_object != commit

    def src(sha: str) -> Source:
        return Source(name="MindSpeed", url="https://example.invalid/MindSpeed.git", commit=sha, install="editable")

    check_commit_object(src(commit), repo, str(repo))  # the commit itself passes
    with pytest.raises(NpuboxError) as err:
        check_commit_object(src(tag_object), repo, str(repo))
    assert str(err.value) == (
        f"source MindSpeed: {tag_object} is the tag object of 'v2.0.0_core_r0.8.0', not a commit; "
        f"pin the commit it points to: {commit}"
    )


def _source_requirements(src: Source, relpath: str) -> list[Requirement]:
    with tarfile.open(source_archive(src.name, src.commit)) as tar:
        member = next(m for m in tar.getmembers() if m.name.split("/", 1)[-1] == relpath)
        text = io.TextIOWrapper(tar.extractfile(member), encoding="utf-8").read()
    return [Requirement(line.split("#")[0].strip()) for line in text.splitlines() if line.split("#")[0].strip()]


def _marker_env(python: str, arch: str) -> dict:
    env = default_environment()
    env.update(
        python_version=python,
        python_full_version=f"{python}.0",
        platform_machine=arch,
        sys_platform="linux",
        platform_system="Linux",
    )
    return env


def _lock_cases():
    for env in NPU_ENVS:
        real = load_spec(env, arch="aarch64")
        yield pytest.param(real, id=f"{env}-aarch64")
        for arch in ("aarch64", "x86_64"):
            yield pytest.param(make_twin(load_spec(env, arch=arch)), id=f"{env}-twin-{arch}")


@pytest.mark.sources
@pytest.mark.parametrize("loaded", list(_lock_cases()))
def test_lock_covers_the_sources_requirements(loaded):
    """Every requirement of every pinned source's requirements.txt is in the lock at a version it
    accepts (a twin leaves out only the Ascend-only packages)."""
    assert loaded.lock_path.is_file(), f"run `{loaded.lock_hint}`"
    locked = {canonicalize_name(e.name): e.version for e in loaded.lock}
    assert all(e.hashes for e in loaded.lock)
    markers = _marker_env(loaded.spec.python, loaded.arch)
    checked = 0
    for src in loaded.spec.sources:
        for relpath in src.requirements:
            for req in _source_requirements(src, relpath):
                name = canonicalize_name(req.name)
                if req.marker is not None and not req.marker.evaluate(markers):
                    continue
                if loaded.twin_of is not None and name in NPU_ONLY:
                    assert name not in locked
                    continue
                assert name in locked, f"{src.name} {relpath}: {req} is not in {loaded.lock_path.name}"
                assert req.specifier.contains(locked[name], prereleases=True), (
                    f"{src.name} {relpath}: {req} but {loaded.lock_path.name} has {locked[name]}"
                )
                checked += 1
    assert checked >= 20


@pytest.mark.parametrize("env", NPU_ENVS)
@pytest.mark.parametrize("arch", ["aarch64", "x86_64"])
def test_twin_keeps_every_pin_of_the_real_stack(env, arch):
    real = load_spec(env, arch="aarch64")  # the lock torch_npu resolves from the index (see llm.env.twin)
    twin = make_twin(load_spec(env, arch=arch))
    real_pins, twin_pins = real.pins(), twin.pins()
    kept = {n: v for n, v in real_pins.items() if n not in NPU_ONLY and n not in real.site_wheel_pins()}
    assert {n: twin_pins.get(n) for n in kept} == kept
    assert not set(twin_pins) & NPU_ONLY
    assert twin.spec.accelerator == "cpu" and twin.spec.cann is None
    assert [(s.name, s.commit, s.install, s.into) for s in twin.spec.sources] == [
        (s.name, s.commit, s.install, s.into) for s in real.spec.sources
    ]
    diff = differences(twin)
    assert (f"Python {twin.spec.python} (real: {real.spec.python})" in diff) == (twin.spec.python != real.spec.python)
    if real.spec.engine == "mindformers":  # one mindspore wheel holds the CPU and Ascend backends: nothing dropped
        assert any(d.startswith("MindSpore") and "CPU backend" in d for d in diff)
        assert sum(d.startswith("CPU shim: ") for d in diff) == 2
    else:
        assert any("torch-npu" in d for d in diff)
    assert f"no CANN (real: {real.spec.cann.version})" in diff


@pytest.mark.parametrize("env", NPU_ENVS)
def test_plan_misses_nothing_but_cann_and_apex(env, tmp_path):
    """With the pinned sources in a source cache, an Ascend spec's plan (aarch64: Atlas 800T A2)
    misses only what Huawei alone distributes: CANN installers, Ascend's apex where the stack
    imports it, MindSpore where the index has not the release."""
    plan = make_plan(load_spec(env, arch="aarch64"), inputs=BuildInputs(vendor=tmp_path, source_cache=SOURCES))
    missing = [i.what for i in plan.missing]
    allowed = [m for m in missing if m.startswith("CANN installer") or m in VENDOR_WHEELS.values()]
    assert missing == allowed
    spec = load_spec(env).spec
    assert bool([m for m in missing if m.startswith("CANN installer")]) == (not spec.cann.in_base)
    assert [m for m in missing if m.startswith("site wheel")] == ([VENDOR_WHEELS[env]] if env in VENDOR_WHEELS else [])
    labels = plan.labels
    assert labels["npubox.cann"] == spec.cann.version
    pins = load_spec(env).requirement_pins()
    framework = "torch-npu" if spec.engine != "mindformers" else "mindspore"
    if framework in pins:
        assert labels[f"npubox.pin.{framework}"] == pins[framework]
    for src in spec.sources:
        assert labels[f"npubox.source.{src.name}"] == src.commit


@pytest.mark.parametrize("env", NPU_ENVS)
def test_twin_plan_misses_nothing_and_labels_what_differs(env):
    twin = make_twin(load_spec(env))
    plan = make_plan(twin, inputs=BuildInputs(source_cache=SOURCES))
    vendor = VENDOR_WHEELS.get(env, "")
    assert [i.what for i in plan.missing] == ([vendor] if "mindspore" in vendor else [])  # no Ascend-only wheel
    assert plan.labels["npubox.twin-of"] == env
    assert plan.labels["npubox.twin.differences"] == "; ".join(plan.differences)
    assert "npubox.pin.torch-npu" not in plan.labels and "npubox.cann" not in plan.labels
    assert plan.cann_mode == "none"


def test_locks_name_no_host_path_or_index():
    for lock in sorted((REPO / "envs").glob("*.lock")):
        text = lock.read_text()
        for needle in ("/opt/", "/etc/", "/work/", "/tmp/", "://"):
            assert needle not in text, f"{lock.name} mentions {needle!r}"


def test_x86_64_ascend_locks_explain_what_is_missing():
    """torch_npu's x86_64 wheels require torch's `+cpu` build from PyTorch's own index: the plan
    names the lock command (the README says which index to add)."""
    loaded = load_spec("ascend-mindspeed-llm-2.0.0", arch="x86_64")
    if loaded.lock_path.is_file():
        pytest.skip("an x86_64 lock was made on a host with PyTorch's CPU index")
    with pytest.raises(NpuboxError, match="invoke lock --env ascend-mindspeed-llm-2.0.0 --arch x86_64"):
        _ = loaded.lock


def test_a_stale_lock_is_refused(tmp_path):
    """A lock resolved for other source commits names the command that renews it."""
    text = (REPO / "envs" / "ascend-mindspeed-llm-2.0.0.yaml").read_text()
    old, new = "3a712f58635be8825189c65a89f27a90dc458765", "a" * 40
    (tmp_path / "ascend-mindspeed-llm-2.0.0.yaml").write_text(text.replace(old, new))
    lock = (REPO / "envs" / "ascend-mindspeed-llm-2.0.0.aarch64.lock").read_text()
    (tmp_path / "ascend-mindspeed-llm-2.0.0.aarch64.lock").write_text(lock)
    loaded = load_spec("ascend-mindspeed-llm-2.0.0", tmp_path, arch="aarch64")
    with pytest.raises(NpuboxError) as err:
        _ = loaded.lock
    assert "did not resolve requirements.txt of source MindSpeed-LLM at aaaaaaaaaaaa" in str(err.value)
    assert parse_lock(tmp_path / "ascend-mindspeed-llm-2.0.0.aarch64.lock")  # the file itself is fine
