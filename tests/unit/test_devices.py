"""Host device discovery and run flags, on fake hosts under a temporary root (no Docker, no NPU)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from llm.env import devices as dev
from llm.env.spec import Cann, LoadedSpec, load_spec
from llm.errors import NpuboxError

# `npu-smi info` of an Atlas 800T A2 (8 × 910B3) with a training job on cards 2 and 3.
NPU_SMI_910B = """\
+------------------------------------------------------------------------------------------------+
| npu-smi 23.0.6                   Version: 23.0.6                                               |
+---------------------------+---------------+----------------------------------------------------+
| NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|
| Chip                      | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |
+===========================+===============+====================================================+
| 0     910B3               | OK            | 96.1        36                0    / 0             |
| 0                         | 0000:C1:00.0  | 0           0    / 0          3397 / 65536         |
+===========================+===============+====================================================+
| 1     910B3               | OK            | 93.5        35                0    / 0             |
| 0                         | 0000:C2:00.0  | 0           0    / 0          3396 / 65536         |
+===========================+===============+====================================================+
| 2     910B3               | OK            | 372.8       51                0    / 0             |
| 0                         | 0000:81:00.0  | 87          0    / 0          61234/ 65536         |
+===========================+===============+====================================================+
| 3     910B3               | OK            | 366.0       50                0    / 0             |
| 0                         | 0000:82:00.0  | 85          0    / 0          61201/ 65536         |
+===========================+===============+====================================================+
| 4     910B3               | OK            | 95.0        34                0    / 0             |
| 0                         | 0000:01:00.0  | 0           0    / 0          3396 / 65536         |
+===========================+===============+====================================================+
| 5     910B3               | Warning       | 94.2        37                0    / 0             |
| 0                         | 0000:02:00.0  | 0           0    / 0          3397 / 65536         |
+===========================+===============+====================================================+
| 6     910B3               | OK            | 97.7        36                0    / 0             |
| 0                         | 0000:41:00.0  | 0           0    / 0          3396 / 65536         |
+===========================+===============+====================================================+
| 7     910B3               | OK            | 96.9        37                0    / 0             |
| 0                         | 0000:42:00.0  | 0           0    / 0          3396 / 65536         |
+===========================+===============+====================================================+
+---------------------------+---------------+----------------------------------------------------+
| NPU     Chip              | Process id    | Process name             | Process memory(MB)      |
+===========================+===============+====================================================+
| No running processes found in NPU 0                                                            |
+===========================+===============+====================================================+
| No running processes found in NPU 1                                                            |
+===========================+===============+====================================================+
| 2       0                 | 2893112       | python3.10               | 57841                   |
+===========================+===============+====================================================+
| 3       0                 | 2893113       | python3.10               | 57805                   |
+===========================+===============+====================================================+
| No running processes found in NPU 4                                                            |
+===========================+===============+====================================================+
| No running processes found in NPU 5                                                            |
+===========================+===============+====================================================+
| No running processes found in NPU 6                                                            |
+===========================+===============+====================================================+
| No running processes found in NPU 7                                                            |
+===========================+===============+====================================================+
"""

# An inference card with two chips per NPU (Atlas 300I Duo, 310P3): the Device column is the card.
NPU_SMI_310P = """\
+--------------------------------------------------------------------------------------------------------+
| npu-smi 23.0.rc3                                 Version: 23.0.rc3                                     |
+-------------------------------+-----------------+------------------------------------------------------+
| NPU     Name                  | Health          | Power(W)     Temp(C)           Hugepages-Usage(page) |
| Chip    Device                | Bus-Id          | AICore(%)    Memory-Usage(MB)                        |
+===============================+=================+======================================================+
| 8       310P3                 | OK              | NA           49                0     / 0             |
| 0       0                     | 0000:01:00.0    | 0            1650 / 44280                            |
| 1       1                     | 0000:01:00.0    | 0            1382 / 43693                            |
+===============================+=================+======================================================+
+-------------------------------+-----------------+------------------------------------------------------+
| NPU     Chip                  | Process id      | Process name             | Process memory(MB)        |
+===============================+=================+======================================================+
| 8       1                     | 4012            | mindie_llm_back          | 1102                      |
+===============================+=================+======================================================+
"""

VERSION_INFO = """\
Version=24.1.rc2
ascendhal_version=7.35.23
aicpu_version=1.0
tdt_version=1.0
log_version=1.0
Innerversion=V100R001C19SPC001B233
compatible_version=[V100R001C15],[V100R001C17],[V100R001C18],[V100R001C19]
package_version=24.1.rc2
"""

CARD_MAJOR = 240
GROUP = 4242  # the driver's HwHiAiUser group on the fake host


def make_npu_host(
    root: Path,
    cards=range(8),
    *,
    version_info: str | None = VERSION_INFO,
    npu_smi: str | None = None,
    group: int = GROUP,
) -> Path:
    """A fake Ascend host: davinci cards and manager devices made with mknod, a driver tree."""
    (root / "dev").mkdir(parents=True)
    nodes = [(f"davinci{i}", CARD_MAJOR, i) for i in cards]
    nodes += [("davinci_manager", 237, 0), ("devmm_svm", 236, 0), ("hisi_hdc", 235, 0)]
    for name, major, minor in nodes:
        path = root / "dev" / name
        os.mknod(path, 0o660 | stat.S_IFCHR, os.makedev(major, minor))
        os.chown(path, 0, group)
        os.chmod(path, 0o660)  # mknod applied the umask
    driver = root / "usr/local/Ascend/driver"
    (driver / "lib64").mkdir(parents=True)
    if version_info is not None:
        (driver / "version.info").write_text(version_info)
    (root / "etc").mkdir()
    (root / "etc/ascend_install.info").write_text("Driver_Install_Path_Param=/usr/local/Ascend\n")
    if npu_smi is not None:
        smi = root / "usr/local/bin/npu-smi"
        smi.parent.mkdir(parents=True)
        (root / "npu-smi.txt").write_text(npu_smi)
        smi.write_text(f"#!/bin/sh\ncat {root / 'npu-smi.txt'}\n")
        smi.chmod(0o755)
    return root


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mknod of character devices needs root")


def npu_spec(min_driver: str | None = "23.0.0") -> LoadedSpec:
    """The CPU spec turned into an NPU one; only cann.version and cann.min_driver are read."""
    cpu = load_spec("cpu")
    cann = Cann.model_construct(version="8.1.RC1", min_driver=min_driver)
    return LoadedSpec(cpu.spec.model_copy(update={"name": "npu-probe", "accelerator": "npu", "cann": cann}), cpu.path)


def cuda_spec() -> LoadedSpec:
    cpu = load_spec("cpu")
    return LoadedSpec(cpu.spec.model_copy(update={"name": "cuda-probe", "accelerator": "cuda"}), cpu.path)


def values(flags: list[str], name: str) -> list[str]:
    return [flags[i + 1] for i, f in enumerate(flags) if f == name]


# ---------------------------------------------------------------------------- npu-smi parser


def test_npu_smi_info_910b_chips_health_and_processes():
    info = dev.parse_npu_smi_info(NPU_SMI_910B)
    assert info.version == "23.0.6"
    assert [c.npu for c in info.chips] == list(range(8))
    assert {c.name for c in info.chips} == {"910B3"}
    assert info.chips[2].bus_id == "0000:81:00.0"
    assert info.chip_for(5).health == "Warning"
    assert [(p.npu, p.pid, p.name, p.memory_mb) for p in info.processes] == [
        (2, 2893112, "python3.10", 57841),
        (3, 2893113, "python3.10", 57805),
    ]
    assert [p.pid for p in info.processes_on(3)] == [2893113]
    assert info.processes_on(0) == []


def test_npu_smi_info_310p_two_chips_per_npu():
    info = dev.parse_npu_smi_info(NPU_SMI_310P)
    assert info.version == "23.0.rc3"
    assert [(c.npu, c.chip, c.card_index, c.name) for c in info.chips] == [(8, 0, 0, "310P3"), (8, 1, 1, "310P3")]
    assert [p.pid for p in info.processes_on(1)] == [4012]
    assert info.processes_on(0) == []


def test_npu_smi_garbage_is_refused():
    with pytest.raises(ValueError):
        dev.parse_npu_smi_info("dcmi module initialize failed. ret is -8005\n")


# ---------------------------------------------------------------------------- selection, versions


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0-3,6", [0, 1, 2, 3, 6]),
        ("6,0-1", [0, 1, 6]),
        ("2", [2]),
        ("1,1-2", [1, 2]),
        (" 0 - 1 ".replace(" ", ""), [0, 1]),
    ],
)
def test_selection(text, expected):
    assert dev.parse_selection(text, list(range(8))) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("0-3,9", "--devices '0-3,9': card 9 not found on this host; found: 0, 1, 2, 3, 4, 5, 6, 7"),
        ("3-1", "the range '3-1' runs backwards"),
        ("0,a", "'a' is not a number or a range"),
        ("", "'' is not a number or a range"),
    ],
)
def test_bad_selection_is_one_clear_sentence(text, message):
    with pytest.raises(NpuboxError) as e:
        dev.parse_selection(text, list(range(8)))
    assert message in str(e.value)


@pytest.mark.parametrize(
    "older, newer",
    [
        ("23.0.rc3", "23.0.0"),
        ("23.0.0", "23.0.3"),
        ("23.0.3", "24.1.rc1"),
        ("24.1.rc1", "24.1.rc1.1"),
        ("24.1.rc2", "24.1.0"),
        ("7.1", "23.0.0"),
        ("24.1.RC2", "24.1.rc3"),
    ],
)
def test_driver_version_order(older, newer):
    assert dev.version_older(older, newer)
    assert not dev.version_older(newer, older)
    assert not dev.version_older(newer, newer)
    assert not dev.version_older("23.0", "23.0.0")


# ---------------------------------------------------------------------------- discovery


@needs_root
def test_discovery_on_a_fake_atlas(tmp_path):
    root = make_npu_host(tmp_path, npu_smi=NPU_SMI_910B)
    (root / "dev/davinci9").write_text("a regular file is not a card")
    (root / "dev/davinciX").mkdir()
    host = dev.discover_ascend(root)
    assert [(c.index, c.major, c.minor) for c in host.cards] == [(i, CARD_MAJOR, i) for i in range(8)]
    assert [m.container_path for m in host.managers] == ["/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc"]
    assert [t for _, t in host.driver_paths] == [
        "/usr/local/Ascend/driver",
        "/usr/local/bin/npu-smi",
        "/etc/ascend_install.info",
    ]  # no /usr/local/dcmi here
    assert host.driver_version == "24.1.rc2"
    assert host.npu_smi.chip_for(7).name == "910B3"
    text = host.describe()
    assert "/dev/davinci2 (240:2) 910B3 health OK busy: python3.10 (pid 2893112)" in text


def test_a_host_without_anything(tmp_path):
    host = dev.discover_ascend(tmp_path)
    assert host.cards == [] and host.managers == [] and host.driver_paths == [] and host.driver_version is None
    with pytest.raises(NpuboxError) as e:
        dev.device_flags(npu_spec(), None, root=tmp_path)
    assert str(e.value).startswith("env 'npu-probe' needs Ascend NPUs, and this host has none (no /dev/davinci<N>")
    assert str(e.value).count(". ") == 0  # one sentence


@needs_root
def test_failing_npu_smi_is_a_note_not_a_failure(tmp_path):
    root = make_npu_host(tmp_path, npu_smi="")
    (root / "usr/local/bin/npu-smi").write_text("#!/bin/sh\necho 'dcmi module initialize failed' >&2\nexit 1\n")
    host = dev.discover_ascend(root)
    assert host.npu_smi is None and len(host.cards) == 8
    assert "card health and use are unknown" in host.notes[0]


# ---------------------------------------------------------------------------- flags


@needs_root
def test_npu_flags_for_a_subset(tmp_path, capsys):
    root = make_npu_host(tmp_path, npu_smi=NPU_SMI_910B)
    flags, env = dev.device_flags(npu_spec(), "0-3,6", root=root)
    assert values(flags, "--device") == [f"{root}/dev/davinci{i}:/dev/davinci{i}" for i in (0, 1, 2, 3, 6)] + [
        f"{root}/dev/{m}:/dev/{m}" for m in ("davinci_manager", "devmm_svm", "hisi_hdc")
    ]
    assert values(flags, "--mount") == [
        f"type=bind,source={root}/usr/local/Ascend/driver,target=/usr/local/Ascend/driver,readonly",
        f"type=bind,source={root}/usr/local/bin/npu-smi,target=/usr/local/bin/npu-smi,readonly",
        f"type=bind,source={root}/etc/ascend_install.info,target=/etc/ascend_install.info,readonly",
    ]
    assert values(flags, "--group-add") == [str(GROUP)]
    assert not any("privileged" in f for f in flags)
    assert env == {"ASCEND_RT_VISIBLE_DEVICES": "0,1,2,3,4"}
    err = capsys.readouterr().err
    assert "warning: NPU card 2 is busy: python3.10 (pid 2893112)" in err
    assert "card 5" not in err  # not selected: its Warning health is not ours to report


@needs_root
def test_npu_flags_all_cards_and_unknown_card(tmp_path, capsys):
    root = make_npu_host(tmp_path, cards=range(4))
    flags, env = dev.device_flags(npu_spec(), None, root=root)
    assert len(values(flags, "--device")) == 4 + 3
    assert env == {"ASCEND_RT_VISIBLE_DEVICES": "0,1,2,3"}
    with pytest.raises(NpuboxError, match=r"card 4, 7 not found on this host; found: 0, 1, 2, 3$"):
        dev.device_flags(npu_spec(), "0-1,4,7", root=root)


@needs_root
def test_old_driver_is_refused_naming_both_versions(tmp_path):
    root = make_npu_host(tmp_path, version_info="Version=23.0.rc3\n")
    with pytest.raises(NpuboxError) as e:
        dev.device_flags(npu_spec(min_driver="24.1.rc1"), None, root=root)
    message = str(e.value)
    assert "the NPU driver on this host is 23.0.rc3" in message and "older than 24.1.rc1" in message
    assert "CANN 8.1.RC1 of env 'npu-probe'" in message
    dev.device_flags(npu_spec(min_driver="23.0.rc3"), None, root=root)  # equal is fine
    dev.device_flags(npu_spec(min_driver=None), None, root=root)  # no minimum: not checked


@needs_root
def test_unknown_driver_version_is_refused_when_the_spec_has_a_minimum(tmp_path):
    root = make_npu_host(tmp_path, version_info=None)
    with pytest.raises(NpuboxError, match="does not say which driver this host has"):
        dev.device_flags(npu_spec(min_driver="24.1.rc1"), None, root=root)
    flags, _ = dev.device_flags(npu_spec(min_driver=None), None, root=root)
    assert "--device" in flags


@needs_root
def test_real_root_uses_plain_device_paths(tmp_path, monkeypatch):
    root = make_npu_host(tmp_path, cards=[0])
    host = dev.discover_ascend(root)
    real = [dev.Card(Path("/dev/davinci0"), "/dev/davinci0", 240, 0, GROUP, index=0)]
    host.cards, host.managers, host.driver_paths = real, [], [(Path("/usr/local/dcmi"), "/usr/local/dcmi")]
    flags, _ = dev.ascend_flags(npu_spec(min_driver=None), host, None)
    assert flags == [
        "--device",
        "/dev/davinci0",
        "--mount",
        "type=bind,source=/usr/local/dcmi,target=/usr/local/dcmi,readonly",
        "--group-add",
        str(GROUP),
    ]


def test_cpu_uses_no_devices(tmp_path):
    assert dev.device_flags(load_spec("cpu"), None, root=tmp_path) == ([], {})
    with pytest.raises(NpuboxError, match="runs on the CPU and uses none"):
        dev.device_flags(load_spec("cpu"), "0", root=tmp_path)


NVIDIA_SMI = """\
0, NVIDIA H100 80GB HBM3, GPU-5f3c1a2e-0b7d-4f4e-9a1c-2d3e4f5a6b7c, 81559, 550.54.15
1, NVIDIA H100 80GB HBM3, GPU-6a4d2b3f-1c8e-4a5f-8b2d-3e4f5a6b7c8d, 81559, 550.54.15
"""


def test_cuda_flags_from_nvidia_smi(tmp_path):
    calls = []

    def runner(argv):
        calls.append(argv)
        return NVIDIA_SMI

    fake = tmp_path / "usr/bin/nvidia-smi"
    fake.parent.mkdir(parents=True)
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    gpus = dev.discover_cuda(tmp_path, runner)
    assert [(g.index, g.name, g.memory_mb) for g in gpus] == [(0, "NVIDIA H100 80GB HBM3", 81559)] * 1 + [
        (1, "NVIDIA H100 80GB HBM3", 81559)
    ]
    assert calls[0][1].startswith("--query-gpu=index,name")
    assert dev.device_flags(cuda_spec(), None, root=tmp_path, runner=runner) == (["--gpus", "all"], {})
    assert dev.device_flags(cuda_spec(), "0-1", root=tmp_path, runner=runner) == (["--gpus", '"device=0,1"'], {})
    with pytest.raises(NpuboxError, match="GPU 2 not found on this host; found: 0, 1"):
        dev.device_flags(cuda_spec(), "2", root=tmp_path, runner=runner)


def test_cuda_without_a_driver(tmp_path):
    with pytest.raises(NpuboxError, match=r"needs NVIDIA GPUs, and this host has no nvidia-smi \(no NVIDIA driver\)"):
        dev.device_flags(cuda_spec(), None, root=tmp_path)
