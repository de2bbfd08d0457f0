"""A byte-level BPE tokenizer for the tiny model, trained locally with `tokenizers` on the sample corpus.

Same pre-tokenization as Qwen2 (NFC, Qwen2's split regex, ByteLevel without prefix space), the same
special tokens, and a Qwen chat template, so every code path that handles a real Qwen2.5
tokenizer directory handles this one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from llm.compat import portable_tokenizer_json

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END]

# Qwen2's pre-tokenizer split (tokenizer.json of Qwen/Qwen2.5-*).
QWEN2_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

DEFAULT_SYSTEM = "You are a helpful assistant."
# The Qwen2.5 chat template without tool calling: a default system turn, then <|im_start|>role\n...<|im_end|>\n.
QWEN_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (message.role == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """Train a byte-level BPE tokenizer; ``vocab_size`` counts the special tokens and the 256 bytes."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


UNUSED = "<|npubox_unused_{}|>"  # fills the ids between the trained tokens and the special ones; no merge makes it


def with_special_ids_from(tok, first_id: int):
    """``tok`` renumbered so that its special tokens take ids ``first_id``, ``first_id + 1``, ... as in Qwen2's own
    vocabulary (<|endoftext|> 151643): the trained tokens keep their order from 0, and the ids between them and the
    special ones hold placeholder tokens that no merge produces. The same text gives the same tokens as before."""
    from tokenizers import Tokenizer, models

    trained = sorted(tok.get_vocab(with_added_tokens=False).items(), key=lambda item: item[1])
    regular = [t for t, _ in trained if t not in SPECIAL_TOKENS]
    if len(regular) > first_id:
        raise ValueError(f"{len(regular)} trained tokens do not fit below the first special id {first_id}")
    vocab = {t: i for i, t in enumerate(regular)}
    vocab.update({UNUSED.format(i): i for i in range(len(regular), first_id)})
    vocab.update({t: first_id + i for i, t in enumerate(SPECIAL_TOKENS)})
    state = json.loads(tok.model.__getstate__())
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    out = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=None, byte_fallback=False))
    out.normalizer, out.pre_tokenizer = tok.normalizer, tok.pre_tokenizer
    out.decoder, out.post_processor = tok.decoder, tok.post_processor
    out.add_special_tokens(SPECIAL_TOKENS)
    return out


def tokenizer_config(model_max_length: int, tokenizer_class: str = "Qwen2Tokenizer") -> dict:
    """tokenizer_config.json in the shape of Qwen2.5's, so `transformers.AutoTokenizer` loads it offline.

    ``tokenizer_class``: Qwen2Tokenizer for Qwen2-family models; PreTrainedTokenizerFast (what every
    transformers release has, 4.36 included, which predates Qwen2) for the others."""
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "bos_token": None,
        "chat_template": QWEN_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": ENDOFTEXT,
        "errors": "replace",
        "model_max_length": model_max_length,
        "pad_token": ENDOFTEXT,
        "split_special_tokens": False,
        "tokenizer_class": tokenizer_class,
        "unk_token": None,
    }


def save_tokenizer(tok, out_dir: Path, model_max_length: int, tokenizer_class: str = "Qwen2Tokenizer") -> None:
    """Write tokenizer.json, tokenizer_config.json, and vocab.json + merges.txt (what a Qwen2 model directory has
    beside them, and what MindFormers' Qwen2Tokenizer reads) into ``out_dir`` (a directory not yet published)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"), pretty=True)
    tok.model.save(str(out_dir))
    portable_tokenizer_json(out_dir / "tokenizer.json")  # readable by the stacks' older tokenizers too
    config = tokenizer_config(model_max_length, tokenizer_class)
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
