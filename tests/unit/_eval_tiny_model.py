"""A tiny Qwen2 HF directory (random weights, recipe `tiny`'s shape, a byte-level BPE tokenizer
trained here) for the eval tests. Built locally: no hub, no network."""

from __future__ import annotations

from pathlib import Path


def tokenizer_texts() -> list[str]:
    from llm.eval import sample_sets

    texts = [f"{m}.{n}: {d}." for m, n, d in sample_sets.FACTS]
    texts += [f"The value of {e} is {v}." for e in sample_sets.BOOL_EXPRESSIONS for v in ("True", "False")]
    texts += [
        "The following are multiple choice questions (with answers) about computer science.",
        "Answer: A B C D yes no Question: passage",
        "以下是中国关于考试的单项选择题，请选出其中的正确答案。答案：",
    ]
    return texts * 3


def build_tiny_hf(out: Path, seed: int = 0, init_std: float = 0.1) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    from llm.recipes import load_recipe

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=700, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(tokenizer_texts(), trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>").save_pretrained(
        out
    )

    a = load_recipe("tiny").architecture
    config = Qwen2Config(
        vocab_size=a.vocab_size,
        hidden_size=a.hidden_size,
        intermediate_size=a.ffn_hidden_size,
        num_hidden_layers=a.num_layers,
        num_attention_heads=a.num_attention_heads,
        num_key_value_heads=a.num_query_groups,
        max_position_embeddings=a.max_position_embeddings,
        rope_theta=a.rotary_base,
        rms_norm_eps=a.norm_epsilon,
        tie_word_embeddings=a.tie_embeddings,
        initializer_range=init_std,
        eos_token_id=0,
        bos_token_id=0,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    Qwen2ForCausalLM(config).save_pretrained(out)
    return out
