"""A package whose wheel tags do not say their architecture (MindSpore's aarch64 wheels are `py3-none-any`) is locked
to the one file of the lock's architecture, and a file holding the other architecture's binaries is refused."""

import zipfile

import pytest

from llm.digest import sha256_file
from llm.env import arch_files
from llm.env.spec import load_spec
from llm.errors import NpuboxError

OTHER = "d" * 64
UV_LOCK = (
    "mindspore==2.7.2 \\\n"
    f"    --hash=sha256:{'a' * 64} \\\n"
    f"    --hash=sha256:{'b' * 64}\n"
    "    # via -r x.in\n"
    "numpy==1.26.4 \\\n"
    f"    --hash=sha256:{OTHER}\n"
)


def _wheel(path, so_arch: str):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"mindspore/_c_expression.cpython-311-{so_arch}-linux-gnu.so", b"\x7fELF")
        z.writestr("mindspore-2.7.2.dist-info/METADATA", "Name: mindspore\nVersion: 2.7.2\n")
    return path


@pytest.fixture
def loaded(tmp_path, monkeypatch):
    monkeypatch.setenv("NPUBOX_CACHE", str(tmp_path / "cache"))
    return load_spec("ascend-mindformers-1.8.0", arch="x86_64")


def test_the_lock_keeps_one_hash_the_file_pip_picked_for_the_arch(loaded, tmp_path, monkeypatch):
    picked = _wheel(tmp_path / "mindspore-2.7.2-cp311-cp311-manylinux1_x86_64.whl", "x86_64")
    digest = sha256_file(picked)
    monkeypatch.setattr(arch_files, "_download_one", lambda *a, **k: picked)
    text = arch_files.pin_files(UV_LOCK, loaded, site=None, echo=lambda _: None)
    block = text.split("numpy==")[0]
    assert block.count("--hash=sha256:") == 1 and f"--hash=sha256:{digest}" in block
    assert "# the one file for x86_64: mindspore-2.7.2-cp311-cp311-manylinux1_x86_64.whl" in block
    assert f"numpy==1.26.4 \\\n    --hash=sha256:{OTHER}\n" in text  # other packages keep their hashes
    assert (tmp_path / "cache/wheels/py3.11-x86_64" / picked.name).is_file()  # the build finds it there


def test_a_none_any_wheel_with_the_other_archs_binaries_is_refused(loaded, tmp_path, monkeypatch):
    picked = _wheel(tmp_path / "mindspore-2.7.2-cp311-none-any.whl", "aarch64")
    monkeypatch.setattr(arch_files, "_download_one", lambda *a, **k: picked)
    with pytest.raises(NpuboxError, match="none-any.whl for x86_64: it holds aarch64 binaries"):
        arch_files.pin_files(UV_LOCK, loaded, site=None, echo=lambda _: None)
