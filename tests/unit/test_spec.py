"""The env spec: envs/cpu.yaml loads; every bad spec fails with one message naming the file, the
field path, the bad value and what was expected; the lock is checked against the spec."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from llm.env.spec import load_spec, load_spec_file
from llm.errors import NpuboxError
from llm.recipes import recipe_names

REPO = Path(__file__).resolve().parents[2]
CPU_YAML = (REPO / "envs" / "cpu.yaml").read_text()
CPU_LOCK = (REPO / "envs" / "cpu.lock").read_text()
REQUIREMENTS_BLOCK = re.compile(r"^requirements:\n(  - .*\n)+", re.M)
MEGATRON_SOURCE = """sources:
  - name: megatron
    url: https://example.invalid/Megatron-LM.git
    ref: core_r0.8.0
    commit: baf94af3c667248865f23df73b9fb8e2395e6fd0
    install: pythonpath
"""


def edited(pattern: str, replacement: str, text: str = CPU_YAML) -> str:
    """cpu.yaml with exactly one occurrence of `pattern` (a regex, multiline) replaced."""
    out, n = re.subn(pattern, replacement, text, count=1, flags=re.M)
    assert n == 1, f"{pattern!r} not found in the spec text"
    return out


def write_env(directory: Path, text: str, name: str = "cpu", lock: str | None = CPU_LOCK) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(text)
    if lock is not None:
        (directory / "cpu.lock").write_text(lock)
    return path


def load_error(path: Path) -> str:
    with pytest.raises(NpuboxError) as info:
        load_spec_file(path)
    return str(info.value)


# (case id, spec text, fragments the message must contain: field path, bad value, what was expected)
BAD_SPECS = [
    (
        "unknown-top-level-key",
        CPU_YAML + "shm_sise: 2g\n",
        ["`shm_sise`", "'2g'", "not a known field", "check its spelling"],
    ),
    (
        "unknown-nested-key",
        edited(r"^  image: python", "  imagee: python"),
        ["`base.imagee`", "'python:3.11-slim-bookworm'", "not a known field", "`base.image` is missing"],
    ),
    (
        "version-is-a-float",
        edited(r"^version: 1\.0\.0$", "version: 1.0"),
        ["`version`", "value 1.0:", "expected a valid string"],
    ),
    (
        "version-not-a-version",
        edited(r"^version: 1\.0\.0$", "version: latest"),
        ["`version`", "'latest'", "a version such as 1.0.0"],
    ),
    ("arch-is-a-string", edited(r"^arch: .*$", "arch: x86_64"), ["`arch`", "'x86_64'", "expected a valid list"]),
    (
        "arch-unknown",
        edited(r"^arch: .*$", "arch: [x86_64, riscv64]"),
        ["`arch[1]`", "'riscv64'", "'x86_64' or 'aarch64'"],
    ),
    (
        "requirements-is-a-mapping",
        REQUIREMENTS_BLOCK.sub("requirements:\n  torch: 2.13.0\n", CPU_YAML),
        ["`requirements`", "{'torch': '2.13.0'}", "expected a valid list"],
    ),
    ("accelerator-missing", edited(r"^accelerator: cpu\n", ""), ["`accelerator` is missing", "field required"]),
    (
        "accelerator-unknown",
        edited(r"^accelerator: cpu$", "accelerator: tpu"),
        ["`accelerator`", "'tpu'", "'npu', 'cuda' or 'cpu'"],
    ),
    (
        "duplicate-source",
        CPU_YAML + MEGATRON_SOURCE + MEGATRON_SOURCE.removeprefix("sources:\n"),
        ["`sources`", "'megatron'", "each source name once; duplicated: megatron"],
    ),
    (
        "commit-short-sha",
        CPU_YAML + MEGATRON_SOURCE.replace("baf94af3c667248865f23df73b9fb8e2395e6fd0", "baf94af"),
        ["`sources[0].commit`", "'baf94af'", "full 40-character lowercase hex commit SHA"],
    ),
    (
        "commit-is-a-branch",
        CPU_YAML + MEGATRON_SOURCE.replace("baf94af3c667248865f23df73b9fb8e2395e6fd0", "core_r0.8.0"),
        ["`sources[0].commit`", "'core_r0.8.0'", "branch and tag names are not pins"],
    ),
    (
        "source-install-unknown",
        CPU_YAML + MEGATRON_SOURCE.replace("install: pythonpath", "install: pip"),
        ["`sources[0].install`", "'pip'", "'editable', 'pythonpath' or 'copy-into'"],
    ),
    (
        "source-copy-into-without-into",
        CPU_YAML + MEGATRON_SOURCE.replace("install: pythonpath", "install: copy-into"),
        ["`sources[0]`", "'megatron'", "`into`", "when install is copy-into"],
    ),
    (
        "requirement-unpinned",
        edited(r"^  - torch==2\.13\.0\+cpu.*$", "  - torch>=2"),
        ["`requirements`", "'torch>=2'", "pinned as name==version", "item 0"],
    ),
    (
        "requirement-twice",
        edited(r"^  - rich==15\.0\.0$", "  - rich==15.0.0\n  - NumPy==2.4.6"),
        ["`requirements`", "'NumPy'", "each package once", "appears twice"],
    ),
    (
        "malformed-yaml-unclosed-bracket",
        edited(r"^arch: \[x86_64, aarch64\]$", "arch: [x86_64, aarch64"),
        ["malformed YAML at line 7, column 5", "expected ',' or ']'", "flow sequence started at line 6, column 7"],
    ),
    (
        "duplicate-key",
        CPU_YAML + 'python: "3.10"\n',
        [f"malformed YAML at line {len(CPU_YAML.splitlines()) + 1}, column 1", "the key 'python' appears twice"],
    ),
    (
        "top-level-is-a-list",
        "- name: cpu\n- version: 1.0.0\n",
        ["(1 problem)", "the top level must be a mapping of fields, got list"],
    ),
    ("top-level-is-empty", "# nothing here\n", ["the top level must be a mapping of fields, got NoneType"]),
    (
        "env-var-name-bad",
        edited(r"^  OMP_NUM_THREADS: \"2\"$", '  OMP_NUM_THREADS: "2"\n  OMP-THREADS: "2"'),
        ["`env`", "'OMP-THREADS'", "environment variable names of letters, digits and '_'"],
    ),
    (
        "env-var-value-int",
        edited(r"^  OMP_NUM_THREADS: \"2\"$", "  OMP_NUM_THREADS: 2"),
        ["`env.OMP_NUM_THREADS`", "value 2:", "expected a valid string"],
    ),
    (
        "npu-without-cann",
        edited(r"^accelerator: cpu$", "accelerator: npu"),
        ["`cann`", "value None", "a `cann` section (version, installers) for accelerator npu"],
    ),
    (
        "cpu-with-cann",
        CPU_YAML + "cann:\n  version: 8.1.RC1\n  installers:\n    - Ascend-cann-toolkit_{version}_linux-{arch}.run\n",
        ["`cann`", "'8.1.RC1'", "no `cann` section for accelerator cpu"],
    ),
    (
        "digest-bad",
        edited(r"^  image: python:3\.11-slim-bookworm$", "  image: python:3.11-slim-bookworm\n  digest: sha256:abc"),
        ["`base.digest`", "'sha256:abc'", "sha256:<64 hex digits>"],
    ),
    (
        "python-major-only",
        edited(r'^python: "3\.11"$', 'python: "3"'),
        ["`python`", "'3'", "a Python minor version such as 3.11"],
    ),
    (
        "python-is-a-float",
        edited(r'^python: "3\.11"$', "python: 3.11"),
        ["`python`", "value 3.11:", "expected a valid string"],
    ),
    (
        "shm-size-bad",
        edited(r"^shm_size: 1g$", "shm_size: 1 gig"),
        ["`shm_size`", "'1 gig'", "a size such as 512m or 16g"],
    ),
    ("models-empty", edited(r"^models: .*$", "models: []"), ["`models`", "value []", "at least 1 item"]),
    ("env-name-bad", edited(r"^name: cpu$", "name: CPU Stack"), ["`name`", "'CPU Stack'", "lowercase letters, digits"]),
]


def test_at_least_fourteen_distinct_bad_specs():
    assert len({case_id for case_id, _, _ in BAD_SPECS}) == len(BAD_SPECS) >= 14
    assert len({text for _, text, _ in BAD_SPECS}) == len(BAD_SPECS)


@pytest.mark.parametrize("text, fragments", [case[1:] for case in BAD_SPECS], ids=[case[0] for case in BAD_SPECS])
def test_bad_spec_message_names_file_field_value_and_expectation(tmp_path, text, fragments):
    path = write_env(tmp_path, text)
    message = load_error(path)
    assert message.startswith(f"{path}:"), message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    assert "Traceback" not in message and "pydantic" not in message.lower()


def test_several_problems_are_all_listed(tmp_path):
    text = edited(r"^accelerator: cpu$", "accelerator: tpu", edited(r'^python: "3\.11"$', 'python: "3"'))
    message = load_error(write_env(tmp_path, text))
    assert "(2 problems)" in message
    assert "'tpu'" in message and "'3'" in message


def test_name_must_match_file_name(tmp_path):
    path = write_env(tmp_path, CPU_YAML, name="gpu")
    message = load_error(path)
    assert message == f"{path}: field `name` is 'cpu': expected the file's own name 'gpu'"


def test_missing_file_is_named(tmp_path):
    message = load_error(tmp_path / "cpu.yaml")
    assert message == f"{tmp_path / 'cpu.yaml'}: file not found"


def test_unknown_env_lists_known_ones(tmp_path):
    write_env(tmp_path, CPU_YAML)
    with pytest.raises(NpuboxError, match=r"unknown env 'gpu'; known envs: cpu$"):
        load_spec("gpu", tmp_path)
    with pytest.raises(NpuboxError, match=r"env name '\.\./cpu' is not valid"):
        load_spec("../cpu", tmp_path)


def test_good_spec_loads_with_its_lock():
    loaded = load_spec("cpu")
    spec = loaded.spec
    assert (spec.name, spec.accelerator, spec.python, spec.version) == ("cpu", "cpu", "3.11", "1.0.0")
    assert spec.arch == ["x86_64", "aarch64"]
    assert spec.base.bootstrap is not None and spec.base.bootstrap.suite == "bookworm"
    assert spec.cann is None and spec.sources == []
    assert spec.env == {"OMP_NUM_THREADS": "2"}
    assert spec.models == ["tiny", "qwen25-7b"]
    pins = loaded.pins()
    assert pins["torch"] == "2.13.0+cpu" and pins["megatron-core"] == "0.16.1"
    for req in spec.requirements:  # every requirement is in the lock at its pinned version
        name, version = req.split("==")
        assert pins[canonicalize_name(name)] == version
    assert len(pins) > len(spec.requirements)  # transitive dependencies are locked too
    assert all(e.hashes and all(h.startswith("sha256:") for h in e.hashes) for e in loaded.lock)


def test_missing_lock_says_how_to_make_it(tmp_path):
    loaded = load_spec_file(write_env(tmp_path, CPU_YAML, lock=None))  # the spec itself is fine
    with pytest.raises(NpuboxError) as info:
        loaded.tag
    message = str(info.value)
    assert str(tmp_path / "cpu.lock") in message and "does not exist" in message
    assert "run `invoke lock --env cpu`" in message


def test_lock_out_of_date_with_a_requirement(tmp_path):
    text = edited(r"^  - numpy==2\.4\.6$", "  - numpy==2.4.7")
    loaded = load_spec_file(write_env(tmp_path, text))
    with pytest.raises(NpuboxError) as info:
        loaded.pins()
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'cpu.lock'}: out of date with {tmp_path / 'cpu.yaml'}")
    assert "requirement numpy==2.4.7 is locked as 2.4.6" in message
    assert "invoke lock --env cpu" in message


def test_lock_missing_a_requirement(tmp_path):
    text = edited(r"^  - rich==15\.0\.0$", "  - rich==15.0.0\n  - peft==0.7.1")
    loaded = load_spec_file(write_env(tmp_path, text))
    with pytest.raises(NpuboxError, match=r"requirement peft==0\.7\.1 is locked as absent"):
        loaded.lock


def test_lock_entry_without_hash(tmp_path):
    lock = edited(r"^(annotated-types==0\.8\.0) \\\n(    --hash=.*\n)+", r"\1\n", CPU_LOCK)
    loaded = load_spec_file(write_env(tmp_path, CPU_YAML, lock=lock))
    with pytest.raises(NpuboxError) as info:
        loaded.lock
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'cpu.lock'}: every pin needs a --hash")
    assert "--require-hashes" in message and message.endswith("none for annotated-types")


def test_lock_line_that_is_not_a_pin(tmp_path):
    lock = CPU_LOCK + "numpy>=2\n"
    loaded = load_spec_file(write_env(tmp_path, CPU_YAML, lock=lock))
    lineno = len(lock.splitlines())
    with pytest.raises(NpuboxError, match=rf"cpu\.lock:{lineno}: expected `name==version`, got 'numpy>=2'"):
        loaded.lock


@pytest.mark.parametrize("name", [p.stem for p in sorted((REPO / "envs").glob("*.yaml"))])
def test_every_shipped_spec_validates(name):
    loaded = load_spec(name)
    assert loaded.name == name
    assert set(loaded.spec.models) <= set(recipe_names()), "every model a spec lists has a recipe"
