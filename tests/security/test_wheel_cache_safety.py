"""The shared wheel cache (issue 19, case 2): a lock whose hash does not match a cached wheel must not cost
another env that wheel. pip runs for real (offline: PIP_NO_INDEX), on wheels made here."""

from __future__ import annotations

import hashlib
import re
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from llm.env.site import Site
from llm.env.spec import load_spec_file
from llm.errors import NpuboxError

REPO = Path(__file__).resolve().parents[2]
WHEEL = "tinypkg-1.0-py3-none-any.whl"
CPU_YAML = (REPO / "envs" / "cpu.yaml").read_text()


def make_wheel(path: Path, body: str) -> str:
    """A valid pure-Python wheel of tinypkg 1.0 whose module holds ``body``; returns its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dist = "tinypkg-1.0.dist-info"
    files = {
        "tinypkg/__init__.py": body,
        f"{dist}/METADATA": "Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: npubox-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
        z.writestr(f"{dist}/RECORD", "".join(f"{n},,\n" for n in [*files, f"{dist}/RECORD"]))
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def env_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NPUBOX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # nothing leaves this machine: the wheels are here
    spec = tmp_path / "envs" / "cpu.yaml"
    spec.parent.mkdir()
    text, n = re.subn(r"^requirements:\n(  - .*\n)+", "requirements:\n  - tinypkg==1.0\n", CPU_YAML, flags=re.M)
    assert n == 1
    spec.write_text(text)  # envs/cpu.yaml requiring only the wheel made here
    return spec


def fetch(spec: Path, digest: str, wheelhouse: list[Path] = ()):
    from llm.env.context import fetch_wheels

    spec.with_name("cpu.lock").write_text(f"tinypkg==1.0 \\\n    --hash=sha256:{digest}\n")
    loaded = load_spec_file(spec)
    return loaded, fetch_wheels(loaded, SimpleNamespace(site=Site(list(wheelhouse))), echo=None)


def test_a_lock_with_a_wrong_hash_leaves_the_cached_wheel(env_dir, tmp_path):
    from llm.env.plan import wheel_cache

    cached = wheel_cache(load_spec_file(env_dir)) / WHEEL
    good = make_wheel(cached, "A = 1\n")
    with pytest.raises(NpuboxError, match="downloading the locked wheels of cpu.lock failed"):
        fetch(env_dir, "0" * 64)
    assert cached.is_file() and hashlib.sha256(cached.read_bytes()).hexdigest() == good  # still there, unchanged
    _, files = fetch(env_dir, good)  # the env whose lock names it still builds offline
    assert files == [cached]
    assert [p.name for p in cached.parent.parent.iterdir()] == [cached.parent.name]  # no scratch folder left


def test_a_wheel_of_the_same_name_with_other_bytes_does_not_replace_the_cached_one(env_dir, tmp_path):
    from llm.env.plan import wheel_cache

    cached = wheel_cache(load_spec_file(env_dir)) / WHEEL
    first = make_wheel(cached, "A = 1\n")
    second = make_wheel(tmp_path / "wheelhouse" / WHEEL, "B = 2\n")
    _, files = fetch(env_dir, second, [tmp_path / "wheelhouse"])
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == first
    assert files == [cached.parent / "sha256" / second / WHEEL]
    assert hashlib.sha256(files[0].read_bytes()).hexdigest() == second
    _, again = fetch(env_dir, second)  # found offline in the cache next time
    assert again == files
