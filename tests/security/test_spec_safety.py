"""Specs and recipes: a YAML alias bomb or a huge file is refused in milliseconds, every message reprs a
bounded prefix of a value, and an `env:` value reaches the image and `--verify` literally (no `$VAR`
expansion by Docker; a newline is refused when the spec is validated, not late in the build)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llm.env.spec import load_spec, load_spec_file
from llm.errors import NpuboxError
from llm.runtime_report import drifts

REPO = Path(__file__).resolve().parents[2]
CPU_YAML = (REPO / "envs" / "cpu.yaml").read_text()


def with_env(directory: Path, env_block: str) -> Path:
    """envs/cpu.yaml with its `env:` mapping replaced, as <directory>/cpu.yaml."""
    text, n = re.subn(r"^env:\n(  .*\n)+", lambda m: env_block, CPU_YAML, count=1, flags=re.M)
    assert n == 1
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cpu.yaml").write_text(text)
    return directory / "cpu.yaml"


def run_isolated(code: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``code`` in a child limited to 1 GiB of memory, so that a regression fails fast, not the machine."""
    limit = "import resource; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", limit + code], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    return proc, time.monotonic() - started


# --- case 6: alias bomb, size ---------------------------------------------------------------------------

BOMB = "".join(
    f"{a}: &{a} [{', '.join([f'*{b}'] * 9) if b else ', '.join(['x'] * 9)}]\n"
    for a, b in zip("abcdefghi", [None, *"abcdefgh"])
)  # 9^9 strings from ~350 bytes


def test_a_yaml_alias_bomb_is_refused_in_milliseconds(tmp_path):
    assert len(BOMB) < 400
    spec = tmp_path / "cpu.yaml"
    spec.write_text(CPU_YAML + BOMB)
    proc, seconds = run_isolated(f"""
from llm.env.spec import load_spec_file
from llm.errors import NpuboxError
try:
    load_spec_file({str(spec)!r})
except NpuboxError as e:
    print(e)
""")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "anchors and aliases (&name, *name) are not allowed here" in proc.stdout
    assert f"{spec}: invalid (1 problem)" in proc.stdout and "at line" in proc.stdout
    assert seconds < 20


def test_a_recipe_with_an_alias_is_refused():
    from llm.yamlfile import parse_yaml_text

    with pytest.raises(NpuboxError, match=r"(?s)r.yaml: invalid .*malformed YAML at line 1, column 4: anchors"):
        parse_yaml_text("a: &x 1\nb: *x\n", "r.yaml")


def test_a_huge_spec_is_refused_by_its_size(tmp_path):
    spec = tmp_path / "cpu.yaml"
    spec.write_text(
        CPU_YAML + "".join(f"# padding line {i:08d} .......................................\n" for i in range(20_000))
    )
    started = time.monotonic()
    with pytest.raises(NpuboxError) as info:
        load_spec_file(spec)
    assert str(info.value) == f"{spec}: larger than 262,144 bytes; a spec or recipe is a few kilobytes"
    assert time.monotonic() - started < 2


def test_an_error_message_reprs_a_bounded_prefix_of_any_value():
    proc, seconds = run_isolated("""
from llm.yamlfile import _short
shared = ["x" * 100]
for _ in range(60):
    shared = [shared, shared]  # 2**60 leaves when written out whole
print(_short(shared))
print(_short({"k": list(range(10**6))}))
""")
    assert proc.returncode == 0, proc.stderr[-2000:]
    first, second = proc.stdout.splitlines()
    assert len(first) == 80 and first.startswith("[[[[") and first.endswith("...")
    assert second.startswith("{'k': [0, 1, 2,") and len(second) == 80
    assert seconds < 20


# --- case 7: env values -------------------------------------------------------------------------------


def test_env_values_with_a_dollar_are_written_for_docker_to_keep_literally(tmp_path):
    from llm.env.context import render_dockerfile

    loaded = load_spec_file(with_env(tmp_path, 'env:\n  PRICE: "cost$HOME"\n  BRACED: "a${PATH}b"\n'))
    text = render_dockerfile(loaded)
    assert 'ENV PRICE="cost\\$HOME"' in text.splitlines()
    assert 'ENV BRACED="a\\${PATH}b"' in text.splitlines()


def docker_ready() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


@pytest.mark.skipif(not docker_ready(), reason="needs a running Docker engine")
def test_docker_keeps_the_rendered_env_values_literally(tmp_path):
    """The engine itself reads the ENV lines npubox writes: every value comes back byte for byte."""
    from llm.env.context import render_dockerfile

    values = {"PRICE": "cost$HOME", "BRACED": "x${HOME}y", "ODD": 'back\\slash "q" $$ end\\', "WIDE": "ünï ☃"}
    block = "env:\n" + "".join(f"  {k}: {json.dumps(v, ensure_ascii=False)}\n" for k, v in values.items())
    loaded = load_spec_file(with_env(tmp_path / "spec", block))
    env_lines = [line for line in render_dockerfile(loaded).splitlines() if line.split("=")[0][4:] in values]
    assert len(env_lines) == len(values)
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM scratch\n" + "\n".join(env_lines) + "\n")
    tag = f"npubox-test/env-literal:{int(time.time() * 1000)}"
    build = subprocess.run(["docker", "build", "-q", "-t", tag, str(tmp_path / "ctx")], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    try:
        env = json.loads(
            subprocess.run(
                ["docker", "image", "inspect", tag, "--format", "{{json .Config.Env}}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
    finally:
        subprocess.run(["docker", "rmi", tag], capture_output=True)  # our own throwaway image
    got = dict(e.split("=", 1) for e in env)
    assert {k: got.get(k) for k in values} == values


def test_verify_compares_env_values_literally():
    spec = {"python": "3.11", "sources": [], "cann": None, "env": {"PRICE": "cost$HOME", "MODE": "x"}}
    baked = {"tag": "npubox/cpu:1.0.0-0123456789ab", "pins": {}, "spec": spec}
    found = {"python": "3.11.7", "all_packages": {}, "cann": None, "sources": {}}
    assert drifts(baked, found, environ={"PRICE": "cost/tmp", "MODE": "x"}) == [
        "env PRICE: pinned 'cost$HOME', found 'cost/tmp'"
    ]
    assert drifts(baked, found, environ={"PRICE": "cost$HOME"}) == ["env MODE: pinned 'x', found unset"]
    assert drifts(baked, found, environ={"PRICE": "cost$HOME", "MODE": "x"}) == []


@pytest.mark.parametrize("value", ['"line one\\nline two"', '"tab\\there"', '"carriage\\rreturn"'])
def test_an_env_value_with_a_control_character_is_refused_at_validation(tmp_path, value):
    with pytest.raises(NpuboxError) as info:
        load_spec_file(with_env(tmp_path, f"env:\n  GREETING: {value}\n"))
    message = str(info.value)
    assert "field `env`" in message and "single-line values without control characters; GREETING holds" in message


def test_the_shipped_specs_still_load():
    assert load_spec("cpu").spec.env == {"OMP_NUM_THREADS": "2"}


# --- case 11: --arch ------------------------------------------------------------------------------------


@pytest.fixture
def resolver_calls(monkeypatch):
    """write_lock (the uv resolve and the write) replaced by a recorder: nothing may reach it."""
    from llm.env import lock

    calls = []
    monkeypatch.setattr(lock, "write_lock", lambda loaded, *a, **k: calls.append(loaded.arch) or loaded.lock_path)
    return calls


@pytest.mark.parametrize("env", ["cpu", "ascend-mindspeed-llm-2.3.0"])
def test_lock_refuses_an_architecture_that_is_not_one(resolver_calls, env):
    from llm.env.lock import write_locks
    from llm.env.site import Site

    with pytest.raises(NpuboxError, match=r"--arch 'bogus': not an architecture npubox builds for; use one of"):
        write_locks(load_spec(env), Site([]), ["bogus"])
    assert resolver_calls == []


def test_lock_refuses_another_architecture_for_a_spec_with_one_lock(resolver_calls):
    from llm.env.arch import host_arch
    from llm.env.lock import write_locks
    from llm.env.site import Site

    other = "aarch64" if host_arch() == "x86_64" else "x86_64"
    with pytest.raises(NpuboxError, match=rf"--arch {other}: .*cpu.yaml has one lock \(cpu.lock\), resolved for"):
        write_locks(load_spec("cpu"), Site([]), [other])
    assert resolver_calls == []
    assert write_locks(load_spec("cpu"), Site([]), None) and resolver_calls == [host_arch()]


def test_a_dry_run_for_an_architecture_that_is_not_one_is_refused():
    from llm.env import commands

    with pytest.raises(NpuboxError, match=r"--arch 'riscv64': not an architecture npubox builds for"):
        commands.build("cpu", [], dry_run=True, arch="riscv64")
    assert commands.build("cpu", [], dry_run=True, arch="arm64").loaded.arch == "aarch64"  # an alias is fine
