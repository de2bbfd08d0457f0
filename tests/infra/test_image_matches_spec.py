"""The running image is exactly what its spec says, and it is sealed."""

import json


def test_pinned_package_at_pinned_version(pin, installed):
    name, pinned = pin
    found = installed.get(name, "not installed")
    assert found == pinned, f"{name}: pinned {pinned}, found {found}"


def test_pip_check_is_clean(host):
    result = host.run("python -m pip check")
    assert result.rc == 0, result.stdout + result.stderr


def test_python_is_the_spec_minor_version(host, loaded):
    version = host.check_output("python -c 'import platform; print(platform.python_version())'")
    assert version.startswith(loaded.spec.python + "."), f"python: pinned {loaded.spec.python}, found {version}"


def test_runs_as_non_root(host):
    assert host.user().uid != 0
    assert host.check_output("id -u") != "0"


def test_root_filesystem_is_read_only(host):
    result = host.run("touch /etc/npubox-write-probe")
    assert result.rc != 0
    assert "Read-only file system" in result.stderr


def test_workspace_is_writable(host):
    probe = "/workspace/.npubox-write-probe"
    assert host.run(f"touch {probe}").rc == 0
    assert host.file(probe).exists
    host.run(f"rm -f {probe}")


def test_tmp_is_a_writable_tmpfs(host):
    assert host.mount_point("/tmp").filesystem == "tmpfs"
    assert host.run("touch /tmp/probe && rm /tmp/probe").rc == 0


def test_huggingface_is_offline(host):
    env = host.check_output("env")
    assert "HF_HUB_OFFLINE=1" in env.splitlines()
    assert "TRANSFORMERS_OFFLINE=1" in env.splitlines()


def test_spec_environment_is_set(host, loaded):
    env = dict(line.split("=", 1) for line in host.check_output("env").splitlines() if "=" in line)
    for key, value in loaded.spec.env.items():
        assert env.get(key) == value, f"{key}: spec says {value!r}, found {env.get(key)!r}"


def test_no_network_interface_but_loopback(host):
    interfaces = host.check_output("ls /sys/class/net").split()
    assert interfaces == ["lo"], interfaces


def test_llm_env_verify_passes(host):
    result = host.run("python -m llm env --verify")
    assert result.rc == 0, result.stdout + result.stderr


def test_baked_spec_is_this_spec(host, loaded):
    import json

    baked = json.loads(host.file("/etc/npubox/spec.json").content_string)
    assert baked["spec_hash"] == loaded.content_hash
    assert baked["tag"] == loaded.tag


def test_every_source_commit_is_recorded_in_the_image(host, loaded):
    """Images carry no .git: each pinned source's commit is in /opt/npubox/sources/<name>.commit,
    which `llm env` reports (and `--verify` compares)."""
    reported = json.loads(host.check_output("python -m llm env --json"))["sources"]
    for src in loaded.spec.sources:
        assert host.file(f"/opt/npubox/sources/{src.name}.commit").content_string.strip() == src.commit
        assert reported[src.name] == src.commit


def test_megatron_dataset_helpers_are_compiled(host, loaded):
    """Wherever Megatron comes as source, its C++ dataset helpers were built with the image: a
    read-only container could not compile them when training starts."""
    trees = [s.into for s in loaded.spec.sources if s.install == "copy-into" and s.subdir == "megatron"]
    if not trees:
        import pytest

        pytest.skip("no Megatron source tree in this image")
    for tree in trees:
        folder = f"/opt/npubox/sources/{tree}/core/datasets"
        assert host.run(f"ls {folder}/helpers*.so").rc == 0, f"no compiled helpers in {folder}"
    # The compiled module loads in this image's Python (without importing the megatron package, whose
    # bcce6f version imports Transformer Engine, which only AscendSpeed's NPU adaptor stands in for).
    load = (
        "import glob, importlib.util as u; p = glob.glob('{folder}/helpers*.so')[0]; "
        "m = u.module_from_spec(u.spec_from_file_location(p.split('/')[-1].split('.')[0], p)); "
        "m.__spec__.loader.exec_module(m); print(sorted(n for n in dir(m) if n.startswith('build_')))"
    )
    for tree in trees:
        out = host.run(f'cd /tmp && python -c "{load.format(folder=f"/opt/npubox/sources/{tree}/core/datasets")}"')
        assert out.rc == 0, out.stderr
        assert "build_sample_idx" in out.stdout or "build_mapping" in out.stdout, out.stdout


def test_cann_exports_are_in_the_image_env(host, loaded):
    """What the spec's set_env.sh scripts export is baked into ENV: `docker exec` and testinfra,
    which read no .bashrc, see the toolkit (and NNAL where the stack sources it)."""
    import pytest

    if loaded.spec.cann is None:
        pytest.skip("no CANN in this image")
    env = dict(line.split("=", 1) for line in host.check_output("env").splitlines() if "=" in line)
    assert env.get("ASCEND_TOOLKIT_HOME") or env.get("ASCEND_HOME_PATH"), "the toolkit's set_env.sh exports are missing"
    if any("/nnal/" in path for path in loaded.spec.cann.set_env):
        assert env.get("ATB_HOME_PATH"), "NNAL's nnal/atb/set_env.sh exports are missing"
