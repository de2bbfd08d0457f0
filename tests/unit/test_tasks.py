"""tasks.py: every task listed with help, every option explained, bad requests refused in one line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INVOKE = Path(sys.executable).parent / "invoke"
TASKS = [
    "base-image",
    "build-image",
    "lock",
    "up",
    "down",
    "shell",
    "ps",
    "run",
    "check",
    "envs",
    "models",
    "export-image",
    "import-image",
]


def invoke(*args: str) -> subprocess.CompletedProcess:
    # No docker on PATH and an unreachable daemon: these calls must not need Docker.
    env = {
        **os.environ,
        "PATH": str(INVOKE.parent),
        "DOCKER_HOST": "unix:///nonexistent/docker.sock",
        "PYTHONPATH": str(REPO),
    }
    return subprocess.run([str(INVOKE), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def ns():
    sys.path.insert(0, str(REPO))
    try:
        from tasks import ns
    finally:
        sys.path.remove(str(REPO))
    return ns


def test_invoke_list_shows_every_task_with_help():
    proc = invoke("--list")
    assert proc.returncode == 0, proc.stderr
    listed = {}
    for line in proc.stdout.splitlines():
        parts = line.split(None, 1)
        if line.startswith("  ") and not line.startswith("    ") and parts:
            listed[parts[0]] = parts[1] if len(parts) > 1 else ""
    assert set(TASKS) <= set(listed), proc.stdout
    for name in TASKS:
        assert len(listed[name]) > 10, f"task {name} has no help text in `invoke --list`"


def test_every_task_has_a_docstring_and_every_option_has_help(ns):
    assert set(TASKS) <= set(ns.task_names)
    for name in ns.task_names:
        task = ns[name]
        assert task.__doc__ and task.__doc__.strip(), name
        for argument in task.get_arguments():
            assert argument.help and len(argument.help) > 5, f"option --{argument.name} of task {name} has no help"


def test_run_task_options(ns):
    options = {a.name for a in ns["run"].get_arguments()}
    assert {"env", "model", "phase", "workspace"} <= options
    assert {a.name for a in ns["build-image"].get_arguments()} >= {"env"}
    assert {a.name for a in ns["lock"].get_arguments()} >= {"env"}
    assert {a.name for a in ns["check"].get_arguments()} >= {"env"}


def test_run_help_lists_the_phases():
    proc = invoke("--help", "run")
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "--phase" in text and "one of env, sample, convert, preprocess, pretrain" in text


@pytest.mark.parametrize(
    "args, expected",
    [
        (
            ["run", "--phase", "bogus"],
            r"error: unknown phase 'bogus'; phases: env, sample, convert, preprocess, pretrain, ",
        ),
        (["run", "--env", "nope"], r"error: unknown env 'nope'; known envs: (.+, )?cpu(, |$)"),
        (["run", "--model", "gpt-17"], r"error: unknown model 'gpt-17'; known models: (.+, )?tiny(, |$)"),
        (["build-image", "--env", "nope"], r"error: unknown env 'nope'; known envs: (.+, )?cpu(, |$)"),
    ],
    ids=["phase", "env", "model", "build-env"],
)
def test_bad_request_is_one_line_without_traceback(args, expected):
    proc = invoke(*args)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert re.match(expected, lines[0]), lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "docker" not in lines[0].lower()  # refused before Docker was looked for
