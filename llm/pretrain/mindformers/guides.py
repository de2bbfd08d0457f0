"""What each MindFormers release's guide runs to train a model: its working folder, script, yaml and run mode.

Facts from the pinned sources (mindspore-lab/mindformers; each entry names its file and tag). A guide is the
README a user follows by hand today; the engine runs what it says, with the workspace's paths."""

from __future__ import annotations

from dataclasses import dataclass

from llm.errors import NpuboxError

SOURCE_NAME = "mindformers"  # the spec's source entry the engine runs


@dataclass(frozen=True)
class Guide:
    release: str
    commit: str
    where: str  # the guide, as repository path @ tag
    workdir: str  # the guide's `cd`, relative to the source root
    program: str  # the trainer script, in workdir
    configs: dict[str, str]  # model recipe -> yaml in workdir
    run_mode: str  # the guide's --run_mode
    data_flag: str  # how the guide's command names the dataset (the script's argparse accepts the prefix)


GUIDES = {
    # research/qwen2/qwen2.md @ v1.3.2 (== ../shared/seeds/002): "cd research/qwen2; bash ../../scripts/
    # msrun_launcher.sh "run_qwen2.py --config finetune_qwen2_7b.yaml --run_mode finetune --train_data ...""
    "024279c21923e555f7366940aed9017d13256052": Guide(
        release="1.3.2",
        commit="024279c21923e555f7366940aed9017d13256052",
        where="mindspore-lab/mindformers research/qwen2/qwen2.md @ v1.3.2",
        workdir="research/qwen2",
        program="run_qwen2.py",
        configs={"qwen2-7b": "finetune_qwen2_7b.yaml"},
        run_mode="finetune",
        data_flag="--train_data",
    ),
}


def guide_for_commit(commit: str) -> Guide:
    """The guide of the MindFormers release at ``commit`` (full SHA, or a unique prefix of 7+)."""
    commit = commit.strip().lower()
    found = [g for c, g in GUIDES.items() if len(commit) >= 7 and c.startswith(commit)]
    if len(found) != 1:
        known = ", ".join(f"{g.release} {c[:8]}" for c, g in GUIDES.items())
        raise NpuboxError(
            f"MindFormers commit {commit!r} is not a release the mindformers engine knows; known: {known}"
        )
    return found[0]


def config_for(guide: Guide, model: str) -> str:
    config = guide.configs.get(model)
    if config is None:
        raise NpuboxError(
            f"MindFormers {guide.release}'s guide ({guide.where}) has no training yaml for {model}; "
            f"it has: {', '.join(guide.configs)}"
        )
    return config
