"""Host accelerators → `docker run` flags. CPU: none. CUDA: `--gpus`. NPU: the davinci devices.

Ascend discovery reads the host under a root directory (default "/", a temporary tree in tests):

    /dev/davinci<N>                      one per NPU card (character devices only)
    /dev/davinci_manager, devmm_svm, hisi_hdc   the driver's manager devices
    /usr/local/Ascend/driver, /usr/local/dcmi, /usr/local/bin/npu-smi, /etc/ascend_install.info
    /usr/local/Ascend/driver/version.info       `Version=<driver version>`
    `npu-smi info`                              chip names, health, processes (when npu-smi exists)

The container gets the selected cards only (under their own names), the manager devices, the
driver paths mounted read-only, the group that owns the cards (the driver's HwHiAiUser group) so
its non-root user can open them, and ASCEND_RT_VISIBLE_DEVICES numbering the cards it sees from 0.
No `--privileged`: that is what lets one container take another's cards.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from llm.env.spec import LoadedSpec
from llm.errors import NpuboxError
from llm.runtime_report import read_version_info

MANAGER_DEVICES = ("davinci_manager", "devmm_svm", "hisi_hdc")
DRIVER_PATHS = ("usr/local/Ascend/driver", "usr/local/dcmi", "usr/local/bin/npu-smi", "etc/ascend_install.info")
DRIVER_VERSION_FILE = "usr/local/Ascend/driver/version.info"
NPU_SMI = "usr/local/bin/npu-smi"
CARD_RE = re.compile(r"^davinci(\d+)$")

# Runs a command (argv) and returns its stdout; raises OSError or CalledProcessError on failure.
Runner = Callable[[list[str]], str]


def run_command(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout


# --------------------------------------------------------------------------------------------
# Ascend


@dataclass(frozen=True)
class DeviceNode:
    """A character device on the host: where it is under the root, where it goes in the container."""

    host_path: Path
    container_path: str
    major: int
    minor: int
    gid: int


@dataclass(frozen=True)
class Card(DeviceNode):
    index: int


@dataclass(frozen=True)
class NpuSmiChip:
    """One chip row of `npu-smi info`."""

    npu: int
    chip: int
    name: str
    health: str
    bus_id: str = ""
    device: int | None = None  # the logic device id, where the table has a Device column (310P)

    @property
    def card_index(self) -> int:
        """The /dev/davinci<N> this chip is. Single-chip boards (Atlas 800T A2) number NPU = card."""
        return self.device if self.device is not None else self.npu


@dataclass(frozen=True)
class NpuSmiProcess:
    npu: int
    chip: int
    pid: int
    name: str
    memory_mb: int | None


@dataclass(frozen=True)
class NpuSmiInfo:
    version: str
    chips: list[NpuSmiChip]
    processes: list[NpuSmiProcess]

    def chip_for(self, card: int) -> NpuSmiChip | None:
        return next((c for c in self.chips if c.card_index == card), None)

    def processes_on(self, card: int) -> list[NpuSmiProcess]:
        chip = self.chip_for(card)
        if chip is None:
            return []
        return [p for p in self.processes if (p.npu, p.chip) == (chip.npu, chip.chip)]


@dataclass
class AscendHost:
    root: Path
    cards: list[Card]
    managers: list[DeviceNode]
    driver_paths: list[tuple[Path, str]]  # (host path under root, path inside the container)
    driver_version: str | None
    npu_smi: NpuSmiInfo | None = None
    notes: list[str] = field(default_factory=list)  # what could not be read, for the user

    def describe(self) -> str:
        lines = [f"Ascend cards: {len(self.cards)}; driver {self.driver_version or 'unknown'}"]
        for card in self.cards:
            line = f"  /dev/davinci{card.index} ({card.major}:{card.minor})"
            chip = self.npu_smi.chip_for(card.index) if self.npu_smi else None
            if chip:
                line += f" {chip.name} health {chip.health}"
                busy = self.npu_smi.processes_on(card.index)
                if busy:
                    line += " busy: " + ", ".join(f"{p.name} (pid {p.pid})" for p in busy)
            lines.append(line)
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _device_node(path: Path, container_path: str) -> DeviceNode | None:
    try:
        st = path.stat()
    except OSError:
        return None
    if not stat.S_ISCHR(st.st_mode):
        return None
    return DeviceNode(path, container_path, os.major(st.st_rdev), os.minor(st.st_rdev), st.st_gid)


def find_cards(root: Path) -> list[Card]:
    dev = root / "dev"
    cards = []
    for path in dev.glob("davinci*") if dev.is_dir() else ():
        m = CARD_RE.match(path.name)
        node = _device_node(path, f"/dev/{path.name}") if m else None
        if node:
            cards.append(Card(**node.__dict__, index=int(m.group(1))))
    return sorted(cards, key=lambda c: c.index)


def read_driver_version(root: Path) -> str | None:
    return read_version_info(root / DRIVER_VERSION_FILE)


def discover_ascend(root: Path | str = "/", runner: Runner = run_command) -> AscendHost:
    root = Path(root)
    managers = [n for name in MANAGER_DEVICES if (n := _device_node(root / "dev" / name, f"/dev/{name}"))]
    host = AscendHost(
        root=root,
        cards=find_cards(root),
        managers=managers,
        driver_paths=[(root / p, "/" + p) for p in DRIVER_PATHS if (root / p).exists()],
        driver_version=read_driver_version(root),
    )
    smi = root / NPU_SMI
    if smi.is_file() and os.access(smi, os.X_OK):
        try:
            host.npu_smi = parse_npu_smi_info(runner([str(smi), "info"]))
        except (OSError, subprocess.SubprocessError, ValueError) as e:
            host.notes.append(f"`{smi} info` could not be read ({e}); card health and use are unknown")
    return host


def parse_npu_smi_info(text: str) -> NpuSmiInfo:
    """Parse the table `npu-smi info` prints: a chip section, then a process section.

    Chip section: per NPU a row `NPU Name | Health | ...`, then one row per chip `Chip [Device] |
    Bus-Id | ...`. Process section: `NPU Chip | Process id | Process name | Process memory(MB)`,
    or `No running processes found in NPU <n>`."""
    version = ""
    chips: list[NpuSmiChip] = []
    processes: list[NpuSmiProcess] = []
    section = None
    pending: tuple[int, str, str] | None = None  # (npu, name, health) of the last NPU row
    for raw in text.splitlines():
        line = raw.strip()
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        first = cells[0].split()
        if line.startswith("| npu-smi") or (first and first[0] == "npu-smi"):
            m = re.search(r"Version:\s*(\S+)", line)
            version = m.group(1) if m else (first[1] if len(first) > 1 else "")
            continue
        if first[:2] == ["NPU", "Name"]:
            section = "chips"
            continue
        if first[:2] == ["NPU", "Chip"] and len(cells) > 1 and cells[1].startswith("Process"):
            section = "processes"
            continue
        if not first or not first[0].isdigit():
            continue  # the second header line (`Chip | Bus-Id`), "No running processes found ..."
        if section == "chips":
            if len(first) >= 2 and not first[1].isdigit():  # `0     910B3 | OK | ...`: an NPU row
                pending = (int(first[0]), first[1], cells[1].split()[0] if len(cells) > 1 and cells[1] else "")
            elif pending is not None:  # `0 | 0000:C1:00.0 | ...` or `0  1 | ...` (chip, device)
                npu, name, health = pending
                device = int(first[1]) if len(first) > 1 else None
                bus = cells[1] if len(cells) > 1 else ""
                chips.append(NpuSmiChip(npu, int(first[0]), name, health, bus, device))
        elif section == "processes" and len(first) >= 2 and len(cells) >= 3:
            memory = cells[3].split()[0] if len(cells) > 3 and cells[3] else ""
            processes.append(
                NpuSmiProcess(
                    int(first[0]), int(first[1]), int(cells[1]), cells[2], int(memory) if memory.isdigit() else None
                )
            )
    if not chips:
        raise ValueError("no chip rows found in its output")
    return NpuSmiInfo(version, chips, processes)


# --------------------------------------------------------------------------------------------
# subsets and versions


def parse_selection(devices: str, found: list[int], kind: str = "card") -> list[int]:
    """`0-3,6` → [0, 1, 2, 3, 6], every number checked against the ones found on this host."""
    chosen: list[int] = []
    for part in devices.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise NpuboxError(
                f"--devices {devices!r}: {part!r} is not a number or a range such as 0-3; expected a list like 0-3,6"
            )
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise NpuboxError(f"--devices {devices!r}: the range {part!r} runs backwards; write {hi}-{lo}")
        chosen += [i for i in range(lo, hi + 1) if i not in chosen]
    unknown = [i for i in chosen if i not in found]
    if unknown:
        raise NpuboxError(
            f"--devices {devices!r}: {kind} {', '.join(map(str, unknown))} not found on this host; "
            f"found: {', '.join(map(str, found)) or 'none'}"
        )
    return sorted(chosen)


def version_key(version: str) -> tuple:
    """Order driver versions: 23.0.rc3 < 23.0.0 < 23.0.3 < 24.1.rc1 < 24.1.rc1.1 < 24.1.0."""
    key = []
    for token in re.findall(r"[a-z]+\d*|\d+", version.lower()):
        if token.isdigit():
            key.append((2, int(token)))
        else:  # rc2, alpha, b1: a pre-release sorts before the release it leads to
            digits = re.sub(r"^[a-z]+", "", token)
            key.append((1, int(digits) if digits else 0))
    return tuple(key)


def version_older(version: str, minimum: str) -> bool:
    a, b = list(version_key(version)), list(version_key(minimum))
    width = max(len(a), len(b))
    pad = (2, 0)  # a missing part reads as .0: 23.0 == 23.0.0
    return a + [pad] * (width - len(a)) < b + [pad] * (width - len(b))


# --------------------------------------------------------------------------------------------
# flags


def ascend_flags(loaded: LoadedSpec, host: AscendHost, devices: str | None) -> tuple[list[str], dict[str, str]]:
    if not host.cards:
        raise NpuboxError(
            f"env {loaded.name!r} needs Ascend NPUs, and this host has none "
            f"(no /dev/davinci<N> character devices under {host.root / 'dev'})."
        )
    minimum = loaded.spec.cann.min_driver if loaded.spec.cann else None
    if minimum:
        where = host.root / DRIVER_VERSION_FILE
        if host.driver_version is None:
            raise NpuboxError(
                f"env {loaded.name!r} needs NPU driver {minimum} or newer, and {where} does not say "
                f"which driver this host has (no `Version=` line); install the driver"
            )
        if version_older(host.driver_version, minimum):
            raise NpuboxError(
                f"the NPU driver on this host is {host.driver_version} ({where}), older than {minimum}, "
                f"which CANN {loaded.spec.cann.version} of env {loaded.name!r} requires; "
                f"upgrade the driver and firmware"
            )
    found = [c.index for c in host.cards]
    chosen = parse_selection(devices, found) if devices else found
    cards = [c for c in host.cards if c.index in chosen]
    if host.npu_smi:
        for card in cards:
            chip = host.npu_smi.chip_for(card.index)
            busy = host.npu_smi.processes_on(card.index)
            if chip and chip.health != "OK":
                print(f"warning: NPU card {card.index} ({chip.name}) reports health {chip.health}", file=sys.stderr)
            if busy:
                who = ", ".join(f"{p.name} (pid {p.pid})" for p in busy)
                print(f"warning: NPU card {card.index} is busy: {who}", file=sys.stderr)
    flags: list[str] = []
    for node in [*cards, *host.managers]:
        host_path = str(node.host_path)
        flags += ["--device", host_path if host_path == node.container_path else f"{host_path}:{node.container_path}"]
    for source, target in host.driver_paths:
        flags += ["--mount", f"type=bind,source={source},target={target},readonly"]
    for gid in sorted({n.gid for n in [*cards, *host.managers] if n.gid != 0}):
        flags += ["--group-add", str(gid)]
    # Inside, the runtime numbers the cards it can see from 0, whatever their host numbers.
    return flags, {"ASCEND_RT_VISIBLE_DEVICES": ",".join(str(i) for i in range(len(cards)))}


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    uuid: str
    memory_mb: int | None
    driver: str


NVIDIA_QUERY = ["--query-gpu=index,name,uuid,memory.total,driver_version", "--format=csv,noheader,nounits"]


def parse_nvidia_smi(text: str) -> list[Gpu]:
    gpus = []
    for line in text.splitlines():
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != 5 or not cells[0].isdigit():
            raise ValueError(f"unexpected nvidia-smi line {line!r}")
        memory = cells[3].split()[0]
        gpus.append(Gpu(int(cells[0]), cells[1], cells[2], int(memory) if memory.isdigit() else None, cells[4]))
    return gpus


def discover_cuda(root: Path | str = "/", runner: Runner = run_command) -> list[Gpu] | None:
    """The GPUs nvidia-smi lists; None when this host has no nvidia-smi (no NVIDIA driver)."""
    root = Path(root)
    binary = shutil.which("nvidia-smi") if root == Path("/") else str(root / "usr/bin/nvidia-smi")
    if binary is None or not os.access(binary, os.X_OK):
        return None
    try:
        return parse_nvidia_smi(runner([binary, *NVIDIA_QUERY]))
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        raise NpuboxError(f"`nvidia-smi` failed on this host ({e}); check the NVIDIA driver") from None


def cuda_flags(loaded: LoadedSpec, gpus: list[Gpu] | None, devices: str | None) -> tuple[list[str], dict[str, str]]:
    if gpus is None:
        raise NpuboxError(f"env {loaded.name!r} needs NVIDIA GPUs, and this host has no nvidia-smi (no NVIDIA driver).")
    if not gpus:
        raise NpuboxError(f"env {loaded.name!r} needs NVIDIA GPUs, and nvidia-smi lists none on this host.")
    if not devices:
        return ["--gpus", "all"], {}
    chosen = parse_selection(devices, [g.index for g in gpus], kind="GPU")
    # The value is CSV to docker: the quotes keep "device=0,1" one field. An argv item, no shell.
    return ["--gpus", '"device=' + ",".join(map(str, chosen)) + '"'], {}


def device_flags(
    loaded: LoadedSpec, devices: str | None = None, *, root: Path | str = "/", runner: Runner = run_command
) -> tuple[list[str], dict[str, str]]:
    """Flags and container environment for the spec's accelerator on this host."""
    acc = loaded.spec.accelerator
    if acc == "cpu":
        if devices:
            raise NpuboxError(f"--devices {devices!r} was given, but env {loaded.name!r} runs on the CPU and uses none")
        return [], {}
    if acc == "cuda":
        return cuda_flags(loaded, discover_cuda(root, runner), devices)
    return ascend_flags(loaded, discover_ascend(root, runner), devices)
