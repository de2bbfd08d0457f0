"""The key of an image's installed deps (llm/env/deps_image.py): the same inputs find the committed image again,
and any change to what is installed, or to the os stage it is installed on, installs anew."""

from pathlib import Path

from llm.env.deps_image import deps_key


def _deps(root: Path) -> Path:
    deps = root / "deps"
    for sub in ("wheels", "site-wheels", "sources"):
        (deps / sub).mkdir(parents=True)
    (deps / "wheels" / "six-1.16.0-py2.py3-none-any.whl").write_bytes(b"w" * 100)
    (deps / "sources" / "manifest.tsv").write_text("Megatron-LM\tabc\tpythonpath\t-\t-\tMegatron-LM-abc.tar.gz\n")
    (deps / "sources" / "Megatron-LM-abc.tar.gz").write_bytes(b"archive")
    (deps / "requirements.lock").write_text("six==1.16.0 --hash=sha256:aa\n")
    (deps / "install-deps.sh").write_text("pip install\n")
    return deps


def test_the_same_inputs_give_the_same_key_wherever_the_folder_is(tmp_path):
    assert deps_key("sha256:os", _deps(tmp_path / "a")) == deps_key("sha256:os", _deps(tmp_path / "b"))


def test_each_input_changes_the_key(tmp_path):
    base = deps_key("sha256:os", _deps(tmp_path / "base"))
    assert deps_key("sha256:other-os", _deps(tmp_path / "os")) != base
    edits = {
        "requirements.lock": lambda d: (d / "requirements.lock").write_text("six==1.16.0 --hash=sha256:bb\n"),
        "a source archive": lambda d: (d / "sources" / "Megatron-LM-abc.tar.gz").write_bytes(b"other"),
        "the install script": lambda d: (d / "install-deps.sh").write_text("pip install -v\n"),
        "a wheel's size": lambda d: (d / "wheels" / "six-1.16.0-py2.py3-none-any.whl").write_bytes(b"w" * 101),
        "a site wheel": lambda d: (d / "site-wheels" / "apex-0.1-cp311-cp311-linux_x86_64.whl").write_bytes(b"x"),
    }
    for what, edit in edits.items():
        deps = _deps(tmp_path / what.replace(" ", "-").replace("'", ""))
        edit(deps)
        assert deps_key("sha256:os", deps) != base, what
