"""`invoke build-image --dry-run`: every NPU spec validates and plans, and its labels name every
pinned source SHA, the CANN version and the torch_npu version."""

import pytest

from llm.env.image import BuildInputs
from llm.env.plan import make_plan
from llm.env.spec import env_names, load_spec

NPU_ENVS = [n for n in env_names() if load_spec(n).spec.accelerator == "npu"]


def test_the_ascend_stacks_are_there():
    assert NPU_ENVS == [
        "ascend-mindformers-1.3.2",
        "ascend-mindformers-1.5.0",
        "ascend-mindformers-1.8.0",
        "ascend-mindspeed-llm-2.0.0",
        "ascend-mindspeed-llm-2.3.0",
        "ascend-mindspeed-llm-26.0.0",
        "ascend-modellink-1.0",
    ]


@pytest.mark.parametrize("env", NPU_ENVS)
def test_plan_labels_name_every_pin(env, tmp_path):
    loaded = load_spec(env)
    plan = make_plan(loaded, inputs=BuildInputs(vendor=tmp_path))
    labels = plan.labels
    assert labels["npubox.cann"] == loaded.spec.cann.version
    pins = {**loaded.requirement_pins(), **loaded.site_wheel_pins()}
    names = {s.name for s in loaded.spec.sources}
    if loaded.spec.engine == "mindformers":  # MindSpore's stacks: the framework and MindFormers' source
        assert labels["npubox.pin.mindspore"] == pins["mindspore"] and names == {"mindformers"}
    else:
        assert labels["npubox.pin.torch-npu"] == pins["torch-npu"]
        assert {"MindSpeed", "Megatron-LM", "MindSpeed-LLM"} <= names
    for src in loaded.spec.sources:
        assert labels[f"npubox.source.{src.name}"] == src.commit and len(src.commit) == 40
    inputs = {i.what: i for i in plan.inputs}
    # Ascend's apex and MindSpore 2.4 / 2.6 are on no public index: where a stack needs them, the plan says to bring
    # them.
    for name, version in loaded.site_wheel_pins().items():
        wheel = inputs[f"site wheel {name}=={version}"]
        assert wheel.status == "missing" and "--wheelhouse" in wheel.todo
    for src in loaded.spec.sources:
        item = next(i for w, i in inputs.items() if w.startswith(f"source {src.name} @"))
        assert item.status == "fetch" and "--source-cache" in item.todo


def test_plan_names_missing_cann_installers_and_where_to_put_them(tmp_path):
    loaded = load_spec("ascend-modellink-1.0", arch="aarch64")
    plan = make_plan(loaded, inputs=BuildInputs(vendor=tmp_path))
    missing = [i for i in plan.missing if i.what.startswith("CANN installer")]
    assert [i.what for i in missing] == [
        "CANN installer Ascend-cann-toolkit_8.0.RC1_linux-aarch64.run",
        "CANN installer Ascend-cann-kernels-910b_8.0.RC1_linux.run",
    ]
    assert all("--vendor" in i.todo for i in missing)
    (tmp_path / "Ascend-cann-toolkit_8.0.RC1_linux-aarch64.run").write_text("#!/bin/sh\n")
    plan = make_plan(loaded, inputs=BuildInputs(vendor=tmp_path))
    assert [i.what for i in plan.missing if i.what.startswith("CANN")] == [
        "CANN installer Ascend-cann-kernels-910b_8.0.RC1_linux.run"
    ]


def test_plan_stages_follow_the_spec(tmp_path):
    in_base = make_plan(load_spec("ascend-mindspeed-llm-2.0.0"), inputs=BuildInputs(vendor=tmp_path))
    assert any("from the base image" in s for s in in_base.stages)
    assert any("Megatron-LM@baf94af copy-into -> MindSpeed-LLM/megatron" in s for s in in_base.stages)
    cpu = make_plan(load_spec("cpu"))
    assert not any(s.startswith(("cann", "sources")) for s in cpu.stages)
    assert [i.status for i in cpu.inputs if i.what == "lock"] == ["present"]


def test_every_model_an_env_lists_has_a_recipe():
    from llm.recipes import recipe_names

    known = set(recipe_names())
    for env in env_names():
        missing = set(load_spec(env).spec.models) - known
        assert not missing, f"{env}: no recipe for {sorted(missing)}"


def test_a_build_for_another_architecture_is_refused_before_docker(tmp_path, monkeypatch):
    from llm.env import commands
    from llm.env.arch import host_arch
    from llm.errors import NpuboxError

    def no_docker():
        raise AssertionError("the build reached Docker")

    monkeypatch.setattr(commands, "ensure_daemon", no_docker)
    foreign = "aarch64" if host_arch() == "x86_64" else "x86_64"
    with pytest.raises(NpuboxError, match=rf"--arch {foreign}: this host builds {host_arch()} images"):
        commands.build("ascend-mindspeed-llm-2.0.0", [], vendor=str(tmp_path), arch=foreign)
    assert (
        commands.build("ascend-mindspeed-llm-2.0.0", [], vendor=str(tmp_path), arch=foreign, dry_run=True).arch
        == foreign
    )
