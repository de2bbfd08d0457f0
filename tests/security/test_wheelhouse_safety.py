"""Issue 19's rough edges of --wheelhouse: a wheel is what its file holds, not what its file name says. The build
plan opens each wheel it finds by name (a zip holding one dist-info whose METADATA names the same project and
version, with a WHEEL file, and tags the spec's Python and architecture install) and reports any other as bad, with
the reason; the build refuses it before Docker or pip see it."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest

from llm.env.plan import BuildInputs, make_plan
from llm.env.site import Site
from llm.env.spec import load_spec
from llm.errors import NpuboxError

MODELLINK = "ascend-modellink-1.0"  # its site wheel: Ascend's apex==0.1+ascend, for CPython 3.10
APEX = "site wheel apex==0.1+ascend"


def make_wheel(path: Path, project: str, version: str, tag: str = "cp310-cp310-linux_aarch64") -> Path:
    """A wheel holding ``project`` ``version`` (its dist-info says so), written at ``path`` whatever its name says."""
    path.parent.mkdir(parents=True, exist_ok=True)
    info = f"{project}-{version}.dist-info"
    files = {
        f"{project}/__init__.py": "",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n",
        f"{info}/WHEEL": f"Wheel-Version: 1.0\nGenerator: npubox-test\nRoot-Is-Purelib: false\nTag: {tag}\n",
    }
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
        z.writestr(f"{info}/RECORD", "".join(f"{n},,\n" for n in [*files, f"{info}/RECORD"]))
    return path


@pytest.fixture
def wheelhouse(tmp_path, monkeypatch):
    monkeypatch.setenv("NPUBOX_CACHE", str(tmp_path / "cache"))  # no wheel cached by another test or build
    return tmp_path / "wheelhouse"


def plan_with(env: str, wheelhouse: Path, tmp_path: Path):
    return make_plan(load_spec(env, arch="aarch64"), Site([wheelhouse]), BuildInputs(vendor=tmp_path / "vendor"))


def item(plan, what: str):
    return next(i for i in plan.inputs if i.what == what)


def test_a_wheel_under_anothers_name_is_named_with_what_it_holds(wheelhouse, tmp_path):
    path = make_wheel(wheelhouse / "apex-0.1+ascend-cp310-cp310-linux_aarch64.whl", "fancyprint", "2.0")
    plan = plan_with(MODELLINK, wheelhouse, tmp_path)
    apex = item(plan, APEX)
    said = (
        f"{path} holds fancyprint 2.0 (fancyprint-2.0.dist-info/METADATA), not apex 0.1+ascend as its file name says; "
        "remove it, or put there the apex 0.1+ascend wheel built for CPython 3.10 on aarch64"
    )
    assert (apex.status, apex.where, apex.todo) == ("bad", str(path), said)
    assert plan.site_wheels == []  # never copied into a build context
    with pytest.raises(NpuboxError) as refused:
        plan.require()
    assert str(refused.value).startswith(f"{APEX} is bad: {said}")


@pytest.mark.parametrize(
    "write, problem",
    [
        (lambda p: p.write_bytes(b""), "is empty (0 bytes), not a wheel"),
        (lambda p: p.write_bytes(b"<html>404</html>\n"), "is not a zip archive (17 bytes), so not a wheel"),
        (
            lambda p: make_wheel(p, "apex", "0.1+ascend", "cp311-cp311-linux_aarch64"),
            "is built for cp311-cp311-linux_aarch64, which CPython 3.10 on aarch64 cannot install",
        ),
        (
            lambda p: make_wheel(p, "apex", "0.1+ascend", "cp310-cp310-linux_x86_64"),
            "is built for cp310-cp310-linux_x86_64, which CPython 3.10 on aarch64 cannot install",
        ),
    ],
    ids=["empty", "not-a-zip", "cpython-3.11", "x86_64"],
)
def test_an_empty_or_other_python_site_wheel_is_bad_not_present(wheelhouse, tmp_path, write, problem):
    """The file's name says what the plan looks for; its content or its tags say otherwise."""
    tags = re.search(r"cp3\d+-cp3\d+-linux_\w+", problem)
    path = wheelhouse / f"apex-0.1+ascend-{tags.group(0) if tags else 'cp310-cp310-linux_aarch64'}.whl"
    wheelhouse.mkdir(parents=True, exist_ok=True)
    write(path)
    apex = item(plan_with(MODELLINK, wheelhouse, tmp_path), APEX)
    assert apex.status == "bad" and apex.todo.startswith(f"{path} {problem}; remove it"), apex


def test_a_good_wheel_beside_a_bad_one_is_the_one_taken(wheelhouse, tmp_path):
    make_wheel(
        wheelhouse / "apex-0.1+ascend-cp311-cp311-linux_aarch64.whl", "apex", "0.1+ascend", "cp311-cp311-linux_aarch64"
    )
    good = make_wheel(wheelhouse / "apex-0.1+ascend-cp310-cp310-linux_aarch64.whl", "apex", "0.1+ascend")
    plan = plan_with(MODELLINK, wheelhouse, tmp_path)
    assert (item(plan, APEX).status, item(plan, APEX).where) == ("present", str(good))
    assert plan.site_wheels == [good]


def test_a_locked_wheel_in_the_wheelhouse_is_checked_too(wheelhouse, tmp_path):
    """torch_npu comes through the lock; an empty file of its name in --wheelhouse would be handed to pip."""
    loaded = load_spec("ascend-mindspeed-llm-2.0.0", arch="aarch64")
    version = loaded.requirement_pins()["torch-npu"]
    path = wheelhouse / f"torch_npu-{version}-cp310-cp310-manylinux_2_17_aarch64.manylinux2014_aarch64.whl"
    wheelhouse.mkdir(parents=True)
    path.write_bytes(b"")
    wheel = item(plan_with("ascend-mindspeed-llm-2.0.0", wheelhouse, tmp_path), f"wheel torch-npu=={version}")
    assert (wheel.status, wheel.where) == ("bad", str(path))
    assert wheel.todo.startswith(f"{path} is empty (0 bytes), not a wheel; remove it")
