"""The running image is exactly what its spec says, and it is sealed."""


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
