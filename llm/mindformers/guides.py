"""What each MindFormers release's guide runs: to train a model (its working folder, script, yaml and run mode), to
convert weights (the converter and its model name) and to preprocess alpaca data (the two scripts).

Facts from the pinned sources (mindspore-lab/mindformers; each entry names its file and tag). A guide is the
README a user follows by hand today; the mindformers engine and npubox's convert and preprocess on a MindFormers
stack run what it says, with the workspace's paths."""

from __future__ import annotations

from dataclasses import dataclass, field

from llm.commit_table import find_by_commit
from llm.errors import NpuboxError

SOURCE_NAME = "mindformers"  # the spec's source entry the engine runs
# MindFormers' reverse converter for Llama-layout checkpoints (Qwen2 and Qwen2.5 train as LlamaForCausalLM):
# mindformers/models/llama/convert_reversed.py @ v1.3.2 and @ r1.8.0. From v1.6.0 `convert_weight.py --reversed`
# calls it with one argument too few (TypeError), so npubox calls the function itself.
REVERSE_CONVERTER = "mindformers.models.llama.convert_reversed"


@dataclass(frozen=True)
class Guide:
    release: str
    commit: str
    where: str  # the guide, as repository path @ tag
    workdir: str  # the guide's `cd`, relative to the source root
    program: str  # the trainer script, in workdir
    program_args: tuple[str, ...]  # what the guide passes before --config (e.g. --register_path)
    configs: dict[str, str]  # model recipe -> yaml, relative to workdir
    run_mode: str  # the guide's --run_mode
    data_flag: str  # how the guide's command names the dataset (the script's argparse accepts the prefix)
    # HF -> MindSpore: the guide's converter command, from the source root ({hf}: the HF folder, {ckpt}: the file
    # to write, {dtype}: bf16 / fp16 / fp32), and the dtype it writes whatever it is asked (None: it takes {dtype})
    convert_argv: tuple[str, ...]
    convert_dtype: str | None
    alpaca_converter: str  # alpaca json -> chat messages jsonl, relative to the source root
    preprocess_script: str  # chat messages / text -> MindRecord, relative to the source root
    # yaml values the guide's training command sets through the trainer's options (npubox sets them in the yaml)
    command_values: dict = field(default_factory=dict)
    # the trainer option that makes it load a checkpoint, where the yaml's load_checkpoint alone does not
    load_flag: str | None = None


def _convert_weight(model: str) -> tuple[str, ...]:
    """The root convert_weight.py's command line (its convert_map names the model's converter)."""
    argv = ["convert_weight.py", "--model", model, "--input_path", "{hf}", "--output_path", "{ckpt}"]
    return (*argv, "--dtype", "{dtype}")


GUIDES = {
    # research/qwen2/qwen2.md @ v1.3.2 (== ../shared/seeds/002): "cd research/qwen2; bash ../../scripts/
    # msrun_launcher.sh "run_qwen2.py --config finetune_qwen2_7b.yaml --run_mode finetune --train_data ...""; weights:
    # "python convert_weight.py --model qwen2 ..." (convert_weight.py's convert_map: qwen2 ->
    # research.qwen2.convert_weight); data: alpaca_converter.py, then qwen2_preprocess.py --dataset_type 'qa'.
    "024279c21923e555f7366940aed9017d13256052": Guide(
        release="1.3.2",
        commit="024279c21923e555f7366940aed9017d13256052",
        where="mindspore-lab/mindformers research/qwen2/qwen2.md @ v1.3.2",
        workdir="research/qwen2",
        program="run_qwen2.py",
        program_args=(),
        configs={"qwen2-7b": "finetune_qwen2_7b.yaml"},
        run_mode="finetune",
        data_flag="--train_data",
        convert_argv=_convert_weight("qwen2"),
        convert_dtype=None,
        alpaca_converter="research/qwen2/alpaca_converter.py",
        preprocess_script="research/qwen2/qwen2_preprocess.py",
        # run_qwen2.py calls trainer.finetune(finetune_checkpoint=ckpt); without --load_checkpoint that is None,
        # and Trainer.finetune then sets config.load_checkpoint = None (mindformers/trainer/trainer.py @ v1.3.2):
        # the guide's yaml names the converted checkpoint, and its command would train from random weights.
        load_flag="--load_checkpoint",
    ),
    # research/qwen2_5/README.md @ r1.8.0 (1a72d558, the commit the mindformers 1.8.0 wheel records): from the source
    # root, bash scripts/msrun_launcher.sh "run_mindformer.py --register_path research/qwen2_5 --config
    # finetune_qwen2_5_7b.yaml --run_mode finetune --train_data ..." (the 7B yaml in that folder is
    # finetune_qwen2_5_7b_8k.yaml; the guide's multi-node example names its yaml with the folder, as here); weights:
    # "python convert_weight.py --model qwen2_5 ..."; data: research/qwen2_5/alpaca_converter.py, then
    # qwen2_5_preprocess.py --dataset_type 'qa'.
    "1a72d5583747857f6908c8bcfb3f2502f9f2e541": Guide(
        release="1.8.0",
        commit="1a72d5583747857f6908c8bcfb3f2502f9f2e541",
        where="mindspore-lab/mindformers research/qwen2_5/README.md @ r1.8.0 (1a72d558)",
        workdir=".",
        program="run_mindformer.py",
        program_args=("--register_path", "research/qwen2_5"),
        configs={"qwen25-7b": "research/qwen2_5/finetune_qwen2_5_7b_8k.yaml"},
        run_mode="finetune",
        data_flag="--train_data",
        convert_argv=_convert_weight("qwen2_5"),
        convert_dtype=None,
        alpaca_converter="research/qwen2_5/alpaca_converter.py",
        preprocess_script="research/qwen2_5/qwen2_5_preprocess.py",
    ),
    # research/qwen1_5/README.md @ r1.5.0 (9fa6e2fb, == ../shared/seeds/001): from the source root, bash
    # scripts/msrun_launcher.sh "run_mindformer.py --register_path research/qwen1_5 --config
    # research/qwen1_5/qwen1_5_7b/finetune_qwen1_5_7b.yaml --load_checkpoint ... --auto_trans_ckpt True
    # --train_dataset ... --run_mode finetune" 8; weights: research/qwen1_5/convert_weight.py --torch_ckpt_dir HF
    # --mindspore_ckpt_path CKPT (which writes float16, whatever it is given); data: research/qwen1_5/
    # alpaca_converter.py, then qwen1_5_preprocess.py --dataset_type 'qa'.
    "9fa6e2fb228d8d2dcff48e011ceb6ce685af255d": Guide(
        release="1.5.0",
        commit="9fa6e2fb228d8d2dcff48e011ceb6ce685af255d",
        where="mindspore-lab/mindformers research/qwen1_5/README.md @ r1.5.0 (9fa6e2fb)",
        workdir=".",
        program="run_mindformer.py",
        program_args=("--register_path", "research/qwen1_5"),
        configs={"qwen15-7b": "research/qwen1_5/qwen1_5_7b/finetune_qwen1_5_7b.yaml"},
        run_mode="finetune",
        data_flag="--train_dataset",
        convert_argv=(
            "research/qwen1_5/convert_weight.py",
            "--torch_ckpt_dir",
            "{hf}",
            "--mindspore_ckpt_path",
            "{ckpt}",
        ),
        convert_dtype="fp16",
        alpaca_converter="research/qwen1_5/alpaca_converter.py",
        preprocess_script="research/qwen1_5/qwen1_5_preprocess.py",
        command_values={"auto_trans_ckpt": True},  # the full checkpoint is split for the yaml's parallel layout
    ),
}


def guide_for_commit(commit: str) -> Guide:
    """The guide of the MindFormers release at ``commit`` (full SHA, or a unique prefix of 7+)."""
    guide = find_by_commit(GUIDES, commit)
    if guide is None:
        known = ", ".join(f"{g.release} {c[:8]}" for c, g in GUIDES.items())
        raise NpuboxError(
            f"MindFormers commit {commit.strip()!r} is not a release the mindformers engine knows; known: {known}"
        )
    return guide


def config_for(guide: Guide, model: str, tiny: bool = False) -> str:
    """The guide's training yaml for ``model``; a tiny test model trains with the guide's first yaml, its shape set
    from the recipe."""
    config = guide.configs.get(model) or (next(iter(guide.configs.values())) if tiny else None)
    if config is None:
        raise NpuboxError(
            f"MindFormers {guide.release}'s guide ({guide.where}) has no training yaml for {model}; "
            f"it has: {', '.join(guide.configs)}"
        )
    return config
