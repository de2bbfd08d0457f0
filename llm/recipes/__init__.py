"""Model recipes: each model's architecture, tokenizer, default parallelism per phase and training defaults.

One YAML file per model in this folder (``<name>.yaml``); ``source`` cites where the numbers
come from (a Hugging Face ``config.json``, a public training guide or example script). Light: no torch here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from llm.errors import NpuboxError
from llm.yamlfile import NAME_RE, NAME_RULE, Strict, load_model

RECIPE_DIR = Path(__file__).parent


class Architecture(Strict):
    num_layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    ffn_hidden_size: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_query_groups: int = Field(gt=0)
    kv_channels: int | None = None  # head dim; hidden_size // heads when unset
    vocab_size: int = Field(gt=0, description="the HF config's vocab_size (rows of the HF embedding)")
    make_vocab_size_divisible_by: int = Field(default=128, gt=0)
    max_position_embeddings: int = Field(gt=0)
    rotary_base: float = 10000.0
    norm_epsilon: float = 1e-6
    add_qkv_bias: bool = False
    tie_embeddings: bool = False

    @model_validator(mode="after")
    def _groups_divide_heads(self):
        if self.num_attention_heads % self.num_query_groups:
            raise ValueError(
                f"num_query_groups ({self.num_query_groups}) to divide num_attention_heads ({self.num_attention_heads})"
            )
        return self

    @property
    def head_dim(self) -> int:
        return self.kv_channels or self.hidden_size // self.num_attention_heads

    def padded_vocab_size(self, tp: int = 1) -> int:
        """Megatron's rule: round vocab_size up to a multiple of make_vocab_size_divisible_by × TP."""
        multiple = self.make_vocab_size_divisible_by * tp
        return -(-self.vocab_size // multiple) * multiple


class Parallelism(Strict):
    tp: int = Field(default=1, gt=0)
    pp: int = Field(default=1, gt=0)
    seq_length: int | None = Field(default=None, gt=0)
    micro_batch_size: int | None = Field(default=None, gt=0)
    global_batch_size: int | None = Field(default=None, gt=0)


class Tokenizer(Strict):
    kind: Literal["hf", "tiktoken"] = "hf"
    # Where it comes from: "sample" = trained locally by `python -m llm sample`; otherwise the
    # HF model directory the user provides in the workspace.
    origin: Literal["sample", "hf-dir"] = "hf-dir"
    vocab_size: int | None = None  # for sample tokenizers: the size to train
    # For sample tokenizers: the id of the first special token (<|endoftext|>, then <|im_start|>, <|im_end|>), as in
    # Qwen2's own vocabulary (151643); unset: they come first (0, 1, 2).
    special_ids_from: int | None = Field(default=None, gt=0)


class Training(Strict):
    """What `python -m llm pretrain` trains with unless its flags say otherwise (cosine decay from lr to min_lr)."""

    lr: float = Field(gt=0)
    min_lr: float = Field(ge=0)
    train_iters: int = Field(gt=0)
    precision: Literal["bf16", "fp32"]


class Recipe(Strict):
    name: str
    family: Literal["qwen", "qwen2", "llama"]  # qwen = Qwen v1 (c_attn), qwen2 = Qwen1.5/2/2.5, llama = Llama/Aquila2
    hf_architecture: str  # e.g. Qwen2ForCausalLM
    source: str  # citation: HF config URL, the public guide or script of the parallelism and training defaults
    architecture: Architecture
    tokenizer: Tokenizer = Tokenizer()
    parallelism: dict[Literal["convert", "pretrain", "eval"], Parallelism] = {}
    training: Training
    tiny: bool = False  # a test model: sample weights are generated locally

    @model_validator(mode="after")
    def _special_ids_fit(self):
        first = self.tokenizer.special_ids_from
        if first is not None and first + 3 > self.architecture.vocab_size:
            raise ValueError(
                f"tokenizer.special_ids_from ({first}) + 3 special tokens to fit architecture.vocab_size "
                f"({self.architecture.vocab_size})"
            )
        return self

    def defaults(self, phase: str) -> Parallelism:
        return self.parallelism.get(phase, Parallelism())

    def check_tp(self, tp: int) -> None:
        """Refuse a tensor-parallel size under which a rank would hold part of a head, a query group, an MLP
        column block or a vocabulary shard."""
        a = self.architecture
        for what, value in (
            ("num_attention_heads", a.num_attention_heads),
            ("num_query_groups", a.num_query_groups),
            ("ffn_hidden_size", a.ffn_hidden_size),
            ("padded vocab size", a.padded_vocab_size(tp) if tp >= 1 else a.vocab_size),
        ):
            if tp < 1 or value % tp:
                raise NpuboxError(
                    f"--tp {tp} does not divide {what} ({value}) of recipe {self.name}; choose a divisor of it"
                )


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def load_recipe(name: str) -> Recipe:
    if not NAME_RE.match(name or ""):
        raise NpuboxError(f"model name {name!r} is not valid: use {NAME_RULE}")
    path = RECIPE_DIR / f"{name}.yaml"
    if not path.is_file():
        raise NpuboxError(f"unknown model {name!r}; known models: {', '.join(recipe_names())}")
    recipe = load_model(path, Recipe)
    if recipe.name != name:
        raise NpuboxError(f"{path}: field `name` is {recipe.name!r} but the file is named {name}.yaml")
    return recipe
