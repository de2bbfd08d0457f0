"""Acceptance 1: fake Ascend cards (mknod) are discovered, and a real `docker run` built from our
flags gives a container that sees them as the same character devices, runs as non-root with no
capabilities, is not privileged, and has the driver mounted read-only — checked with testinfra."""

from __future__ import annotations

import json
import os
import stat
import subprocess

import pytest
import testinfra

from llm.env import container
from llm.env.devices import device_flags, discover_ascend
from llm.env.spec import Cann, LoadedSpec, load_spec

MAJOR = 240
GROUP = 4242  # the driver's HwHiAiUser group on the fake host
CARDS = range(6)
SELECTED = "0-3"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mknod of character devices needs root")


def make_fake_atlas(root):
    (root / "dev").mkdir(parents=True)
    nodes = [(f"davinci{i}", MAJOR, i) for i in CARDS]
    nodes += [("davinci_manager", 237, 0), ("devmm_svm", 236, 0), ("hisi_hdc", 235, 0)]
    for name, major, minor in nodes:
        os.mknod(root / "dev" / name, 0o660 | stat.S_IFCHR, os.makedev(major, minor))
        os.chown(root / "dev" / name, 0, GROUP)
        os.chmod(root / "dev" / name, 0o660)  # mknod applied the umask
    driver = root / "usr/local/Ascend/driver"
    (driver / "lib64").mkdir(parents=True)
    (driver / "version.info").write_text("Version=24.1.rc2\npackage_version=24.1.rc2\n")
    (root / "usr/local/dcmi").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc/ascend_install.info").write_text("Driver_Install_Path_Param=/usr/local/Ascend\n")
    return root


def npu_spec() -> LoadedSpec:
    """The CPU spec turned into an NPU one (the CPU image stands in for an NPU image here)."""
    cpu = load_spec("cpu")
    cann = Cann.model_construct(version="8.1.RC1", min_driver="23.0.0")  # only version and min_driver are read
    return LoadedSpec(cpu.spec.model_copy(update={"name": "npu-probe", "accelerator": "npu", "cann": cann}), cpu.path)


@pytest.fixture
def npu_container(cpu_image, workspace, tmp_path):
    root = make_fake_atlas(tmp_path / "host")
    host = discover_ascend(root)
    assert [(c.index, c.major, c.minor) for c in host.cards] == [(i, MAJOR, i) for i in CARDS]
    assert host.driver_version == "24.1.rc2"
    print(host.describe())
    flags, environment = device_flags(npu_spec(), SELECTED, root=root)
    name = f"npubox-npu-probe-{os.getpid()}"
    opts = container.RunOptions(
        image=cpu_image,
        workspace=container.prepare_workspace(workspace),
        env_name="npu-probe",
        device_flags=tuple(flags),
        environment=environment,
        name=name,
    )
    container.up(opts)  # echoes the full `docker run` command
    try:
        yield name, root
    finally:
        container.down(name)


def test_fake_cards_reach_a_sealed_container(npu_container):
    name, root = npu_container
    host = testinfra.get_host(f"docker://{name}")
    for i in range(4):
        kind, major, minor, mode, group = host.check_output(f"stat -c '%F %t %T %a %g' /dev/davinci{i}").rsplit(" ", 4)
        assert (kind, int(major, 16), int(minor, 16)) == ("character special file", MAJOR, i)
        assert (mode, int(group)) == ("660", GROUP)
    for i in (4, 5):
        assert not host.file(f"/dev/davinci{i}").exists  # not selected
    for manager in ("davinci_manager", "devmm_svm", "hisi_hdc"):
        assert host.check_output(f"stat -c '%F' /dev/{manager}") == "character special file"
    assert host.check_output("echo $ASCEND_RT_VISIBLE_DEVICES") == "0,1,2,3"

    assert host.check_output("id -u") != "0"
    assert str(GROUP) in host.check_output("id -G").split()  # can open the root:HwHiAiUser 0660 cards
    cap_eff = [line for line in host.file("/proc/self/status").content_string.splitlines() if line.startswith("CapEff")]
    assert cap_eff == ["CapEff:\t0000000000000000"]
    inspect = json.loads(subprocess.run(["docker", "inspect", name], capture_output=True, text=True, check=True).stdout)
    assert inspect[0]["HostConfig"]["Privileged"] is False

    print(
        "inside:",
        host.check_output(
            "ls -l /dev/davinci*; id; grep CapEff /proc/self/status; "
            "grep -E 'Ascend|dcmi|ascend_install' /proc/self/mounts | cut -d' ' -f2,4 | "
            "cut -d, -f1"
        ),
        sep="\n",
    )
    print("HostConfig.Privileged:", inspect[0]["HostConfig"]["Privileged"])
    for target in ("/usr/local/Ascend/driver", "/usr/local/dcmi", "/etc/ascend_install.info"):
        assert "ro" in host.mount_point(target).options, target
    assert host.file("/usr/local/Ascend/driver/version.info").content_string.startswith("Version=24.1.rc2")
    assert host.run("touch /usr/local/Ascend/driver/x").rc != 0
