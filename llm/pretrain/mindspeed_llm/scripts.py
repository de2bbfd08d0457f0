"""The `mindspeed-llm` engine's command line: MindSpeed-LLM's (or ModelLink's) own ``pretrain_gpt.py`` with the
flags of the stack's example script for the model, composed from the recipe and the pretrain config.

A stack is known by the commit of its MindSpeed-LLM / ModelLink source (never by a branch name); each known commit
lists the example scripts it ships, as facts read from that commit:

    MindSpeed-LLM 2.0.0   3a712f58  examples/mcore/qwen25/pretrain_qwen25_7b_32k_ptd.sh
    MindSpeed-LLM 2.3.0   1bdd9700  examples/mcore/qwen25/pretrain_qwen25_{7b,72b}_32k_ptd.sh
    MindSpeed-LLM 26.0.0  57c33296  examples/mcore/qwen25/pretrain_qwen25_72b_32k_ptd.sh (its only qwen25 script)
    ModelLink v1.0.RC1.0  f33da62b  examples/qwen/pretrain_qwen_7b_ptd.sh (no Aquila2: added on master 2024-05-14)
    ModelLink master      17b97452  examples/qwen/pretrain_qwen_7b_ptd.sh, examples/aquila2/pretrain_aquila2_7b_ptd.sh
                                    (2024-05-29; its examples/aquila2/README.md is the Aquila2 guide of that date)

What comes from where, in :func:`compose`:

- model shape (layers, widths, heads, GQA, vocabulary, norm epsilon, rotary base, biases, tying): the recipe; where
  an example script passes another value or leaves a flag out, its ``differs`` entry says so explicitly;
- parallel layout, sequence length and batch sizes: the recipe's ``pretrain`` defaults (TP4 PP2,
  SEQ_LEN 4096, MBS 1, GBS 64 for qwen25-7b) or the user's ``--tp/--pp/--seq-length/...``;
- training values (iterations, LR, loss scale, seed, precision, intervals): the script's, unless the user gives them;
  weight decay, gradient clipping, Adam betas and init std: the pretrain config (the scripts all use its defaults);
- kernel and feature switches (flash attention, fused RMSNorm / SwiGLU / rotary, ...): the script's, verbatim;
- paths: the workspace layout (data, tokenizer = the HF directory, ``--load`` = what ``llm convert`` wrote or our
  own saves, ``--save`` = checkpoints/<model>/pretrain), with the script's ``--no-load-optim --no-load-rng``; the
  checkpoint must be of the layout the script trains (``checkpoint_format``: megatron-core's with
  --use-mcore-models, else Megatron's legacy model, `llm convert --format legacy`).

Light: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from llm.commit_table import find_by_commit
from llm.errors import NpuboxError

Flag = tuple[str, tuple[str, ...]]  # ("--lr", ("1.25e-06",)); a switch has no values


@dataclass(frozen=True)
class ExampleScript:
    """What one example script passes beyond the model's shape, the paths and the parallel layout."""

    path: str  # inside the source tree
    train_iters: int
    lr: float
    min_lr: float
    initial_loss_scale: float
    precision: Literal["bf16", "fp16"]
    save_interval: int
    eval_interval: int
    eval_iters: int
    seed: int | None  # None: the script passes no --seed (Megatron's default, 1234)
    switches: tuple[str, ...]  # flags without a value, as the script spells them
    options: tuple[Flag, ...] = ()  # flags with values that are neither shape, layout nor training values
    # Where the script's value differs from what the recipe implies: flag -> its values, or None when it omits it.
    differs: dict[str, tuple[str, ...] | None] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)  # what the script exports
    master_port: int = 6000


@dataclass(frozen=True)
class Stack:
    name: str  # "MindSpeed-LLM 2.0.0"
    source: str  # the source tree's name in the env spec ("MindSpeed-LLM" or "ModelLink")
    commit: str
    megatron: str  # the Megatron-LM commit whose megatron/ the stack copies in
    mindspeed: str  # the MindSpeed (AscendSpeed) commit it runs on
    scripts: dict[str, ExampleScript]  # recipe name -> its example script


# MindSpeed-LLM 2.0.0 / 2.3.0 examples/mcore/qwen25/pretrain_qwen25_7b_32k_ptd.sh (identical at both tags).
QWEN25_7B_32K = ExampleScript(
    path="examples/mcore/qwen25/pretrain_qwen25_7b_32k_ptd.sh",
    train_iters=2000,
    lr=1.25e-6,
    min_lr=1.25e-7,
    initial_loss_scale=4096,
    precision="bf16",
    save_interval=2000,
    eval_interval=2000,
    eval_iters=0,
    seed=1234,
    switches=(
        "--use-mcore-models",
        "--sequence-parallel",
        "--use-flash-attn",
        "--use-fused-swiglu",
        "--use-fused-rmsnorm",
        "--use-fused-rotary-pos-emb",
        "--no-gradient-accumulation-fusion",
        "--no-masked-softmax-fusion",
        "--attention-softmax-in-fp32",
        "--no-save-optim",
        "--no-save-rng",
        "--log-throughput",
    ),
    env={"CUDA_DEVICE_MAX_CONNECTIONS": "1"},
)

# MindSpeed-LLM 2.3.0 examples/mcore/qwen25/pretrain_qwen25_72b_32k_ptd.sh: 16 nodes, TP8 PP4 CP4, 32k tokens.
_QWEN25_72B_SWITCHES = (
    "--use-mcore-models",
    "--sequence-parallel",
    "--use-flash-attn",
    "--use-fused-rotary-pos-emb",
    "--use-rotary-position-embeddings",
    "--use-fused-swiglu",
    "--use-fused-rmsnorm",
    "--no-masked-softmax-fusion",
    "--attention-softmax-in-fp32",
    "--no-gradient-accumulation-fusion",
    "--use-distributed-optimizer",
    "--overlap-grad-reduce",
    "--exit-on-missing-checkpoint",
    "--use-ascend-coc",
    "--coc-fused-kernel",
    "--no-shared-storage",
    "--log-throughput",
)
QWEN25_72B_32K = ExampleScript(
    path="examples/mcore/qwen25/pretrain_qwen25_72b_32k_ptd.sh",
    train_iters=2000,
    lr=1.25e-6,
    min_lr=1.25e-7,
    initial_loss_scale=4096,
    precision="bf16",
    save_interval=2000,
    eval_interval=2000,
    eval_iters=0,
    seed=42,
    switches=_QWEN25_72B_SWITCHES,
    options=(
        ("--context-parallel-size", ("4",)),
        ("--context-parallel-algo", ("megatron_cp_algo",)),
        ("--num-layer-list", ("17,20,22,21",)),
    ),
    env={"CUDA_DEVICE_MAX_CONNECTIONS": "1", "HCCL_CONNECT_TIMEOUT": "1800"},
    master_port=6001,
)
# MindSpeed-LLM 26.0.0: the same script plus --transformer-impl local.
QWEN25_72B_32K_26 = replace(QWEN25_72B_32K, options=QWEN25_72B_32K.options + (("--transformer-impl", ("local",)),))

# ModelLink v1.0.RC1.0 (and master 17b97452) examples/qwen/pretrain_qwen_7b_ptd.sh: the legacy model (no
# --use-mcore-models). Qwen-7B's own config says layer_norm_epsilon 1e-6 and max_position_embeddings 8192; the
# script passes no --norm-epsilon (Megatron's default 1e-5) and 32768.
QWEN_7B = ExampleScript(
    path="examples/qwen/pretrain_qwen_7b_ptd.sh",
    train_iters=1000,
    lr=1.25e-6,
    min_lr=1.25e-7,
    initial_loss_scale=4096,
    precision="bf16",
    save_interval=10000,
    eval_interval=10000,
    eval_iters=0,
    seed=None,
    switches=(
        "--sequence-parallel",
        "--use-fused-rmsnorm",
        "--use-flash-attn",
        "--no-masked-softmax-fusion",
        "--attention-softmax-in-fp32",
        "--no-gradient-accumulation-fusion",
    ),
    options=(("--tokenizer-kwargs", ("eos_token", "<|endoftext|>", "pad_token", "<|extra_0|>")),),
    differs={
        "--norm-epsilon": None,
        "--rotary-base": None,
        "--padded-vocab-size": None,
        "--max-position-embeddings": ("32768",),
        "--make-vocab-size-divisible-by": ("16",),
    },
    env={"CUDA_DEVICE_MAX_CONNECTIONS": "1", "NPU_ASD_ENABLE": "0"},
)

# ModelLink master 17b97452 examples/aquila2/pretrain_aquila2_7b_ptd.sh: fp16 and MC2 (matmul fused with the
# tensor-parallel all-reduce, an option that ModelLink v1.0.RC1.0 does not have).
AQUILA2_7B = ExampleScript(
    path="examples/aquila2/pretrain_aquila2_7b_ptd.sh",
    train_iters=2000,
    lr=1.0e-7,
    min_lr=1.0e-8,
    initial_loss_scale=65536,
    precision="fp16",
    save_interval=1000,
    eval_interval=1000,
    eval_iters=0,
    seed=None,
    switches=(
        "--sequence-parallel",
        "--use-fused-rmsnorm",
        "--use-flash-attn",
        "--use-mc2",
        "--no-masked-softmax-fusion",
        "--attention-softmax-in-fp32",
        "--no-gradient-accumulation-fusion",
    ),
    differs={"--rotary-base": None, "--padded-vocab-size": None},
    env={"CUDA_DEVICE_MAX_CONNECTIONS": "1", "NPU_ASD_ENABLE": "0", "WITHOUT_JIT_COMPILE": "1"},
)

STACKS: dict[str, Stack] = {
    s.commit: s
    for s in (
        Stack(
            "MindSpeed-LLM 2.0.0",
            "MindSpeed-LLM",
            "3a712f58635be8825189c65a89f27a90dc458765",
            "baf94af3c667248865f23df73b9fb8e2395e6fd0",
            "dc83a031a2653341be1690013c11cfbf556155c5",
            {"qwen25-7b": QWEN25_7B_32K},
        ),
        Stack(
            "MindSpeed-LLM 2.3.0",
            "MindSpeed-LLM",
            "1bdd97003882083da7c951fceedd71f96116be2f",
            "a845aa7e12b3a117e24c2352b9e3e60bad2e3a17",
            "f620a78bb1e532eeb021a5399f36817e1b3cc94f",
            {"qwen25-7b": QWEN25_7B_32K, "qwen25-72b": QWEN25_72B_32K},
        ),
        Stack(
            "MindSpeed-LLM 26.0.0",
            "MindSpeed-LLM",
            "57c33296592ed12f59396e59461a5bd8d0d589d0",
            "a845aa7e12b3a117e24c2352b9e3e60bad2e3a17",
            "0ed973d6851a49d1396b0bc99e5621a1bf79e278",
            {"qwen25-72b": QWEN25_72B_32K_26},
        ),
        Stack(
            "ModelLink v1.0.RC1.0",
            "ModelLink",
            "f33da62b9017d12aca8364137936ab0d014df428",
            "bcce6f54e075e3c3374ea67adefe54f3f2da2b07",
            "224ae35e8fc96778f957029d1371ddb623452a50",
            {"qwen-7b": QWEN_7B},
        ),
        Stack(
            "ModelLink master 2024-05-29",
            "ModelLink",
            "17b97452f7ed1a86e0d54b119828efd4f1c5b199",
            "bcce6f54e075e3c3374ea67adefe54f3f2da2b07",
            "224ae35e8fc96778f957029d1371ddb623452a50",
            {"qwen-7b": QWEN_7B, "aquila2-7b": AQUILA2_7B},
        ),
    )
}
SOURCE_NAMES = ("MindSpeed-LLM", "ModelLink")


def stack_for_commit(commit: str) -> Stack:
    """The known stack whose MindSpeed-LLM / ModelLink source is at ``commit`` (full SHA, or a unique prefix of 7+)."""
    stack = find_by_commit(STACKS, commit)
    if stack is None:
        known = ", ".join(f"{s.name} {c[:8]}" for c, s in STACKS.items())
        raise NpuboxError(
            f"MindSpeed-LLM / ModelLink commit {commit.strip()!r} is not a stack the mindspeed-llm engine knows; "
            f"known: {known}"
        )
    return stack


def stack_from_spec(spec: dict) -> tuple[Stack, str]:
    """(stack, source name) from a baked spec's ``sources``: the MindSpeed-LLM or ModelLink entry's commit."""
    for src in spec.get("sources") or []:
        if src.get("name") in SOURCE_NAMES:
            return stack_for_commit(src["commit"]), src["name"]
    raise NpuboxError(
        f"the image's spec has no {' or '.join(SOURCE_NAMES)} source, which the mindspeed-llm engine runs; "
        "use --engine mcore or an Ascend image"
    )


def script_for(stack: Stack, model: str) -> ExampleScript:
    script = stack.scripts.get(model)
    if script is None:
        raise NpuboxError(
            f"{stack.name} ({stack.commit[:8]}) has no example pretrain script for {model}; the "
            f"mindspeed-llm engine reproduces the scripts it ships: {', '.join(sorted(stack.scripts))}"
        )
    return script


def checkpoint_format(script: ExampleScript) -> str:
    """The Megatron checkpoint layout (`llm convert --format`) that ``script`` trains and loads: ``mcore`` with
    --use-mcore-models, else ``legacy`` (Megatron's legacy GPTModel, megatron/model)."""
    return "mcore" if "--use-mcore-models" in script.switches else "legacy"


def image_checkpoint_format(model: str) -> str:
    """The layout `llm pretrain --model M` loads on this image: ``mcore`` for the mcore engine, else what the baked
    stack's script for ``model`` trains."""
    from llm.runtime_report import baked_engine, load_baked

    if baked_engine() != "mindspeed-llm":
        return "mcore"
    stack, _ = stack_from_spec((load_baked() or {}).get("spec") or {})
    return checkpoint_format(script_for(stack, model))


def check_load_layout(load: str, stack: Stack, script: ExampleScript, model: str, tp: int, pp: int) -> None:
    """Refuse a checkpoint of the other layout than ``script`` trains: Megatron would fail on it on the cards, after
    the launch."""
    from llm.convert.layout import LAYOUTS
    from llm.convert.mcore import checkpoint_layout

    found, needed = checkpoint_layout(load), LAYOUTS[checkpoint_format(script)]
    if found is not None and found != needed:
        raise NpuboxError(
            f"--load {load} holds {found.model}, but {script.path} of {stack.name} trains {needed.model}, which cannot "
            f"load it; convert the weights for it with `python -m llm convert --model {model} --format {needed.name} "
            f"--tp {tp} --pp {pp} --overwrite` (from a Megatron checkpoint: --from mcore --load-dir DIR)"
        )


def num(x: float | int) -> str:
    """A number as a flag value: integral values without a decimal point (1000000, not 1000000.0)."""
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return repr(x) if isinstance(x, float) else str(x)


def model_flags(recipe, tp: int, seq_length: int, script: ExampleScript) -> list[Flag]:
    """The model's shape, from the recipe, as Megatron / MindSpeed-LLM flags (with the script's differences)."""
    a = recipe.architecture
    flags: list[Flag] = [
        ("--num-layers", (str(a.num_layers),)),
        ("--hidden-size", (str(a.hidden_size),)),
        ("--ffn-hidden-size", (str(a.ffn_hidden_size),)),
        ("--num-attention-heads", (str(a.num_attention_heads),)),
    ]
    if a.kv_channels and a.kv_channels != a.hidden_size // a.num_attention_heads:
        flags.append(("--kv-channels", (str(a.kv_channels),)))
    if a.num_query_groups != a.num_attention_heads:
        flags += [("--group-query-attention", ()), ("--num-query-groups", (str(a.num_query_groups),))]
    flags += [
        ("--max-position-embeddings", (str(seq_length),)),  # the scripts pass SEQ_LEN (rotary: no learned table)
        ("--make-vocab-size-divisible-by", (str(a.make_vocab_size_divisible_by),)),
        ("--padded-vocab-size", (str(a.padded_vocab_size(tp)),)),  # the rows `llm convert` wrote
        ("--position-embedding-type", ("rope",)),
        ("--rotary-base", (num(a.rotary_base),)),
        ("--normalization", ("RMSNorm",)),
        ("--norm-epsilon", (num(a.norm_epsilon),)),
        ("--swiglu", ()),
        ("--disable-bias-linear", ()),
    ]
    if a.add_qkv_bias:
        flags.append(("--add-qkv-bias", ()))
    if not a.tie_embeddings:
        flags.append(("--untie-embeddings-and-output-weights", ()))
    out = []
    for name, values in flags:
        if name in script.differs:
            values = script.differs[name]
            if values is None:
                continue
        out.append((name, values))
    return out


def check_vocab(recipe, tp: int, flags: list[Flag]) -> None:
    """Megatron pads the vocabulary itself when no --padded-vocab-size is given: it must come out as the rows that
    `llm convert` wrote (the recipe's padding), or the checkpoint will not load."""
    given = dict(flags)
    if "--padded-vocab-size" in given:
        return
    a = recipe.architecture
    multiple = int(given["--make-vocab-size-divisible-by"][0]) * tp
    megatron_rows = -(-a.vocab_size // multiple) * multiple
    if megatron_rows != a.padded_vocab_size(tp):
        raise NpuboxError(
            f"with --tp {tp} this stack pads {recipe.name}'s vocabulary to {megatron_rows} rows, but "
            f"`llm convert` writes {a.padded_vocab_size(tp)}; choose a --tp that both agree on"
        )


def split_flags(tokens: list[str]) -> list[Flag]:
    """``--a 1 --b --c x y`` -> [("--a", ("1",)), ("--b", ()), ("--c", ("x", "y"))]."""
    flags: list[Flag] = []
    for token in tokens:
        if token.startswith("--"):
            flags.append((token, ()))
        elif flags:
            flags[-1] = (flags[-1][0], (*flags[-1][1], token))
        else:
            raise NpuboxError(f"extra Megatron arguments must start with a --flag; got {token!r} first")
    return flags


@dataclass(frozen=True)
class Composed:
    groups: list[tuple[str, list[Flag]]]  # pretrain_gpt.py's flags, grouped as the scripts group them
    env: dict[str, str]  # the script's exports

    @property
    def argv(self) -> list[str]:
        return [token for _, flags in self.groups for name, values in flags for token in (name, *values)]

    @property
    def flags(self) -> dict[str, tuple[str, ...]]:
        """Each flag's values by its name."""
        return dict(f for _, flags in self.groups for f in flags)


def compose(
    stack: Stack, recipe, cfg, given: set[str], tokenizer_dir: Path, world_size: int, extra: list[str] = ()
) -> Composed:
    """pretrain_gpt.py's arguments for ``cfg`` (a PretrainConfig) on ``stack``, on ``world_size`` processes.

    ``given``: the config fields the user set on the command line (they win over the script's values); ``extra``:
    Megatron / MindSpeed-LLM flags passed through verbatim, each replacing a composed flag of the same name."""
    script = script_for(stack, recipe.name)
    if "keep_last" in given:
        raise NpuboxError(
            "--keep-last is not an option of MindSpeed-LLM's pretrain_gpt.py; prune "
            f"checkpoints/{recipe.name}/pretrain yourself, or use --engine mcore"
        )
    extra_flags = split_flags(list(extra))

    def pick(name: str, script_value):
        return getattr(cfg, name) if name in given else script_value

    parallel: list[Flag] = [
        ("--tensor-model-parallel-size", (str(cfg.tp),)),
        ("--pipeline-model-parallel-size", (str(cfg.pp),)),
    ]
    model = model_flags(recipe, cfg.tp, cfg.seq_length, script)
    check_vocab(recipe, cfg.tp, model)
    precision = ("bf16" if cfg.bf16 else None) if "bf16" in given else script.precision
    training: list[Flag] = [
        ("--seq-length", (str(cfg.seq_length),)),
        ("--micro-batch-size", (str(cfg.micro_batch_size),)),
        ("--global-batch-size", (str(cfg.global_batch_size),)),
        ("--train-iters", (str(pick("train_iters", script.train_iters)),)),
        ("--lr", (num(pick("lr", script.lr)),)),
        ("--lr-decay-style", ("cosine",)),
        ("--min-lr", (num(pick("min_lr", script.min_lr)),)),
        ("--lr-warmup-iters", (str(cfg.warmup),)) if "warmup" in given else ("--lr-warmup-fraction", ("0.01",)),
        ("--init-method-std", (num(cfg.init_method_std),)),
        ("--weight-decay", (num(cfg.weight_decay),)),
        ("--clip-grad", (num(cfg.clip_grad),)),
        ("--adam-beta1", (num(cfg.adam_beta1),)),
        ("--adam-beta2", (num(cfg.adam_beta2),)),
        ("--initial-loss-scale", (num(script.initial_loss_scale),)),
        ("--attention-dropout", ("0.0",)),
        ("--hidden-dropout", ("0.0",)),
    ]
    if precision:
        training.append((f"--{precision}", ()))
    seed = pick("seed", script.seed)
    if seed is not None:
        training.append(("--seed", (str(seed),)))
    tokenizer: list[Flag] = [
        ("--tokenizer-type", ("PretrainedFromHF",)),
        ("--tokenizer-name-or-path", (str(tokenizer_dir),)),
    ]
    data: list[Flag] = [("--data-path", (cfg.data_path,)), ("--split", ("100,0,0",))]
    checkpoint: list[Flag] = []
    if cfg.load:  # converted weights, or our own saves: the model only, as the scripts load it
        check_load_layout(cfg.load, stack, script, recipe.name, cfg.tp, cfg.pp)
        checkpoint += [("--load", (cfg.load,)), ("--no-load-optim", ()), ("--no-load-rng", ())]
    checkpoint.append(("--save", (cfg.save,)))
    output: list[Flag] = [
        ("--log-interval", (str(cfg.log_interval),)),
        ("--save-interval", (str(pick("save_interval", script.save_interval)),)),
        ("--eval-interval", (str(script.eval_interval),)),
        ("--eval-iters", (str(script.eval_iters),)),
    ]
    if "exit_interval" in given:
        output.append(("--exit-interval", (str(cfg.exit_interval),)))
    switches = [
        s for s in script.switches if not (s == "--use-distributed-optimizer" and "distributed_optimizer" in given)
    ]
    if cfg.distributed_optimizer and "distributed_optimizer" in given:
        switches.append("--use-distributed-optimizer")
    features: list[Flag] = [(s, ()) for s in switches] + list(script.options) + [("--distributed-backend", ("nccl",))]

    replaced = {name for name, _ in extra_flags}
    groups = [
        (title, [f for f in flags if f[0] not in replaced])
        for title, flags in (
            ("parallel", parallel),
            ("model", model),
            ("training", training),
            ("tokenizer", tokenizer),
            ("data", data),
            ("checkpoint", checkpoint),
            ("output", output),
            ("features", features),
        )
    ]
    if extra_flags:
        groups.append(("passed through", extra_flags))
    names = [name for _, flags in groups for name, _ in flags]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise NpuboxError(f"flag(s) {', '.join(twice)} given twice in the extra Megatron arguments")

    composed = Composed(groups, dict(script.env))
    final = composed.flags
    cp = int(final.get("--context-parallel-size", ("1",))[0])
    layers = final.get("--num-layer-list")
    if layers and len(layers[0].split(",")) != cfg.pp:
        raise NpuboxError(
            f"{script.path} splits the layers over {len(layers[0].split(','))} pipeline stages "
            f"(--num-layer-list {layers[0]}) but --pp is {cfg.pp}; pass -- --num-layer-list with {cfg.pp} "
            "numbers (and convert with the same list)"
        )
    layout = cfg.tp * cfg.pp * cp
    if world_size % layout:
        raise NpuboxError(
            f"{world_size} processes cannot hold tp {cfg.tp} × pp {cfg.pp} × cp {cp} = {layout}; launch "
            f"a multiple of {layout} processes (python -m llm launch --nproc N --nnodes M pretrain ...) "
            "or choose a smaller --tp/--pp"
        )
    dp = world_size // layout
    if cfg.global_batch_size % (cfg.micro_batch_size * dp):
        raise NpuboxError(
            f"--global-batch-size {cfg.global_batch_size} is not a multiple of --micro-batch-size "
            f"{cfg.micro_batch_size} × data-parallel size {dp} (world {world_size} / {layout})"
        )
    return composed
