"""`invoke lock`: uv sees what this host's pip sees, and writes nothing of this host into the lock."""

from pathlib import Path

import pytest

from _example_scripts import SOURCES
from llm.env import lock
from llm.env.site import Site
from llm.env.spec import load_spec


def test_uv_gets_the_hosts_pip_settings_without_naming_its_paths(monkeypatch, tmp_path):
    constraints = tmp_path / "site" / "constraints.txt"
    constraints.parent.mkdir()
    constraints.write_text("torch<=2.14.1\n")
    monkeypatch.setattr(
        lock,
        "pip_config",
        lambda: {
            "index-url": ["https://index.invalid/simple"],
            "extra-index-url": ["https://extra.invalid/a", "https://extra.invalid/b"],
            "find-links": ["/srv/wheels"],
            "constraint": [str(constraints)],
            "cert": ["/srv/ca.pem"],
        },
    )
    work = tmp_path / "work"
    work.mkdir()
    args, env = lock.uv_site_args(Site([Path("/srv/more-wheels")]), work)
    assert args == [
        "--index-strategy",
        "unsafe-best-match",
        "--index-url",
        "https://index.invalid/simple",
        "--extra-index-url",
        "https://extra.invalid/a",
        "--extra-index-url",
        "https://extra.invalid/b",
        "--find-links",
        "/srv/wheels",
        "--find-links",
        "/srv/more-wheels",
        "--constraint",
        "site-constraints-0.txt",
    ]
    assert (work / "site-constraints-0.txt").read_text() == "torch<=2.14.1\n"  # copied: the lock names no host path
    assert env["SSL_CERT_FILE"] == "/srv/ca.pem"


def test_lock_header_names_the_sources_it_resolved():
    loaded = load_spec("ascend-mindspeed-llm-2.0.0", arch="aarch64")
    header = lock.lock_header(loaded)
    assert "# source MindSpeed dc83a031a2653341be1690013c11cfbf556155c5 requirements.txt" in header
    assert "# source MindSpeed-LLM 3a712f58635be8825189c65a89f27a90dc458765 requirements.txt" in header
    assert "invoke lock --env ascend-mindspeed-llm-2.0.0 --arch aarch64 --source-cache DIR" in header
    # the committed lock was made by this code from these sources
    assert loaded.lock_path.read_text().startswith(header)


@pytest.mark.sources
def test_source_requirements_come_from_the_pinned_archive():
    src = next(s for s in load_spec("ascend-mindspeed-llm-2.0.0").spec.sources if s.name == "MindSpeed-LLM")
    text = lock.source_file(src, "requirements.txt", SOURCES)
    assert "transformers==4.43.2" in text.splitlines()
