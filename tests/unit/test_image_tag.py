"""The image tag follows the spec's content (not its bytes or location); labels record every pin
and no site setting; the Dockerfile orders its stages from least to most often changed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

import llm
from llm.env.arch import pip_platforms
from llm.env.base import bootstrap_tag, debian_mirror
from llm.env.context import render_dockerfile
from llm.env.labels import baked_spec, labels
from llm.env.spec import LoadedSpec, load_spec, load_spec_file
from llm.errors import NpuboxError

REPO = Path(__file__).resolve().parents[2]
CPU_YAML = (REPO / "envs" / "cpu.yaml").read_text()
CPU_LOCK = (REPO / "envs" / "cpu.lock").read_text()

SITE_SENTINELS = {
    "HTTPS_PROXY": "http://sentinel-proxy.invalid:3128",
    "HTTP_PROXY": "http://sentinel-proxy.invalid:3129",
    "PIP_INDEX_URL": "https://sentinel-index.invalid/simple",
    "PIP_EXTRA_INDEX_URL": "https://sentinel-extra.invalid/simple",
    "PIP_FIND_LINKS": "/sentinel-wheelhouse",
    "PIP_CERT": "/sentinel-ca/bundle.pem",
}


def write_env(directory: Path, text: str = CPU_YAML, lock: str = CPU_LOCK) -> LoadedSpec:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cpu.yaml").write_text(text)
    (directory / "cpu.lock").write_text(lock)
    return load_spec_file(directory / "cpu.yaml")


def replaced(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} should occur once"
    return text.replace(old, new)


def test_tag_format():
    loaded = load_spec("cpu")
    assert re.fullmatch(r"npubox/cpu:1\.0\.0-[0-9a-f]{12}", loaded.tag), loaded.tag
    assert loaded.tag.endswith(loaded.content_hash[:12])
    assert re.fullmatch(r"[0-9a-f]{64}", loaded.content_hash)


def test_same_spec_on_two_machines_gives_the_same_tag(tmp_path):
    here = load_spec("cpu")
    # Another machine: another checkout location, the comments gone, the keys in another order.
    reordered = yaml.safe_dump(yaml.safe_load(CPU_YAML), sort_keys=True, default_flow_style=False)
    reordered = "# copied to another machine\n" + reordered
    assert reordered.splitlines()[1].startswith("accelerator:")  # the order really changed
    machine_a = write_env(tmp_path / "a")
    machine_b = write_env(tmp_path / "b" / "elsewhere", reordered)
    assert machine_a.tag == machine_b.tag == here.tag


def test_changed_pin_changes_the_tag(tmp_path):
    before = write_env(tmp_path / "before")
    after = write_env(
        tmp_path / "after",
        replaced(CPU_YAML, "- numpy==2.4.6", "- numpy==2.4.7"),
        replaced(CPU_LOCK, "numpy==2.4.6 \\", "numpy==2.4.7 \\"),
    )
    assert after.pins()["numpy"] == "2.4.7"
    assert after.tag != before.tag
    assert after.tag.startswith("npubox/cpu:1.0.0-")


def test_changed_transitive_lock_entry_changes_the_tag(tmp_path):
    before = write_env(tmp_path / "before")
    after = write_env(tmp_path / "after", lock=replaced(CPU_LOCK, "anyio==4.16.0 \\", "anyio==4.16.1 \\"))
    assert after.tag != before.tag


def test_changed_llm_version_changes_the_tag(monkeypatch):
    before = load_spec("cpu").tag
    monkeypatch.setattr(llm, "__version__", "99.0.0")
    after = load_spec("cpu")  # a new LoadedSpec: the hash is cached per instance
    assert after.tag != before


def test_labels_record_every_pin_and_the_spec_hash():
    loaded = load_spec("cpu")
    out = labels(loaded, "npubox/base-debian:bookworm-0123456789ab")
    pins = loaded.pins()
    assert {k.removeprefix("npubox.pin."): v for k, v in out.items() if k.startswith("npubox.pin.")} == pins
    assert len(pins) == len(loaded.lock) >= 30
    assert out["npubox.pin.torch"] == "2.13.0+cpu"
    assert out["npubox.pin.megatron-core"] == "0.16.1"
    assert out["npubox.spec-hash"] == loaded.content_hash
    assert out["npubox.env"] == "cpu"
    assert out["npubox.llm-version"] == llm.__version__
    assert out["org.opencontainers.image.title"] == "npubox/cpu"
    assert out["org.opencontainers.image.version"] == "1.0.0"
    assert out["org.opencontainers.image.base.name"] == "npubox/base-debian:bookworm-0123456789ab"
    assert out["org.opencontainers.image.revision"]
    assert all("\n" not in v for v in out.values())


def test_baked_spec_is_json_and_names_the_tag():
    loaded = load_spec("cpu")
    baked = json.loads(json.dumps(baked_spec(loaded)))
    assert baked["tag"] == loaded.tag and baked["spec_hash"] == loaded.content_hash
    assert baked["pins"] == loaded.pins()
    assert baked["spec"]["python"] == "3.11"


def test_site_settings_are_never_recorded(monkeypatch):
    for key, value in SITE_SENTINELS.items():
        monkeypatch.setenv(key, value)
    loaded = load_spec("cpu")
    recorded = [
        *labels(loaded, "python:3.11-slim-bookworm").keys(),
        *labels(loaded, "python:3.11-slim-bookworm").values(),
        json.dumps(baked_spec(loaded)),
        render_dockerfile(loaded),
    ]
    for value in SITE_SENTINELS.values():
        for text in recorded:
            assert value not in text
    assert not any("sentinel" in text for text in recorded)


def test_render_dockerfile_puts_spec_env_as_env_lines(tmp_path):
    text = replaced(CPU_YAML, '  OMP_NUM_THREADS: "2"', '  OMP_NUM_THREADS: "2"\n  MY_FLAG: "a b \\"quoted\\""')
    rendered = render_dockerfile(write_env(tmp_path, text))
    lines = rendered.splitlines()
    assert 'ENV MY_FLAG="a b \\"quoted\\""' in lines
    assert 'ENV OMP_NUM_THREADS="2"' in lines
    assert not any(line.startswith("# @SPEC_ENV@") for line in lines)
    env_at = lines.index('ENV OMP_NUM_THREADS="2"')
    assert env_at < next(i for i, line in enumerate(lines) if line.startswith("COPY llm/"))


def test_render_dockerfile_keeps_non_ascii_values_as_is(tmp_path):
    text = replaced(CPU_YAML, '  OMP_NUM_THREADS: "2"', '  OMP_NUM_THREADS: "2"\n  GREETING: "café 你好"')
    assert 'ENV GREETING="café 你好"' in render_dockerfile(write_env(tmp_path, text)).splitlines()


def test_render_dockerfile_without_spec_env(tmp_path):
    rendered = render_dockerfile(write_env(tmp_path, replaced(CPU_YAML, 'env:\n  OMP_NUM_THREADS: "2"\n', "")))
    assert "OMP_NUM_THREADS" not in rendered
    assert not any("@SPEC_ENV@" in line or line.startswith("#@") for line in rendered.splitlines())


def test_a_newline_value_is_refused_when_the_spec_is_validated(tmp_path):
    with pytest.raises(NpuboxError) as info:  # not late, when the Dockerfile is rendered
        write_env(tmp_path, replaced(CPU_YAML, 'OMP_NUM_THREADS: "2"', 'OMP_NUM_THREADS: "2\\nRUN rm -rf /"'))
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'cpu.yaml'}: invalid (1 problem)")
    assert (
        "field `env`" in message and "single-line values without control characters; OMP_NUM_THREADS holds" in message
    )


def test_dockerfile_stages_go_from_least_to_most_often_changed():
    """On the Dockerfile as rendered for envs/cpu.yaml: OS, then the installed deps (DEPS_IMAGE, which
    llm/env/deps_image.py commits from the os stage), then the llm package last."""
    lines = [line.strip() for line in render_dockerfile(load_spec("cpu")).splitlines()]

    def index(predicate) -> list[int]:
        return [i for i, line in enumerate(lines) if predicate(line)]

    stages = index(lambda line: line.startswith("FROM "))
    assert lines[stages[0]] == "FROM ${BASE_IMAGE} AS os"
    installed = index(lambda line: line == "FROM ${DEPS_IMAGE} AS installed")
    assert len(installed) == 1 and stages[0] < installed[0] < stages[-1]
    assert lines[stages[-1]] == "FROM image-${CANN_MODE} AS image"
    # the wheels and the venv are never copied by a step: no layer holds them twice
    assert not index(lambda line: line.startswith(("COPY", "ADD")) and ("wheels" in line or "/opt/venv" in line))
    copies = index(lambda line: line.startswith(("COPY ", "ADD ")))
    llm_copy = index(lambda line: line.startswith("COPY llm/"))
    assert llm_copy == [copies[-1]], "the llm package must be the last COPY, and copied once"
    assert stages[-1] < llm_copy[0]  # in the final stage
    assert index(lambda line: line.startswith("COPY spec.json"))[0] < llm_copy[0]
    assert index(lambda line: line == 'ENV OMP_NUM_THREADS="2"')[0] < llm_copy[0]
    # After the llm package: only compiling it and the runtime settings.
    tail = [line for line in lines[llm_copy[0] + 1 :] if line and not line.startswith("#")]
    assert all(line.split()[0] in {"RUN", "USER", "WORKDIR", "CMD", "ENTRYPOINT", "LABEL"} for line in tail), tail
    assert [line for line in tail if line.startswith("RUN")] == ["RUN python -m compileall -q /opt/npubox/src/llm"]
    assert not any(re.search(r"proxy|PIP_INDEX|PIP_CERT", line, re.I) for line in lines if not line.startswith("#"))


def test_pip_platforms_match_a_bookworm_image():
    x86 = pip_platforms("x86_64")
    assert x86[0] == "manylinux_2_36_x86_64"  # bookworm's glibc, newest first
    assert {"manylinux2014_x86_64", "manylinux1_x86_64", "linux_x86_64"} <= set(x86)
    assert "manylinux_2_37_x86_64" not in x86
    arm = pip_platforms("aarch64")
    assert "manylinux2014_aarch64" in arm and all(t.endswith("aarch64") for t in arm)


def test_bootstrap_tag_follows_the_bootstrap_settings():
    boot = load_spec("cpu").spec.base.bootstrap
    tag = bootstrap_tag(boot)
    assert re.fullmatch(r"npubox/base-debian:bookworm-[0-9a-f]{12}", tag)
    assert bootstrap_tag(boot.model_copy(update={"packages": [*boot.packages, "git"]})) != tag
    assert bootstrap_tag(boot.model_copy()) == tag


def test_debian_mirror_override(monkeypatch):
    monkeypatch.setenv("NPUBOX_DEBIAN_MIRROR", "http://mirror.invalid/debian")
    assert debian_mirror() == "http://mirror.invalid/debian"
