"""The transformers engine: a Hugging Face causal LM directory (config.json + safetensors).

Besides plain scoring it can score prompts that all start with one shared prefix (the header and
the few-shot examples of a subject): the prefix runs once, its key/value cache is reused for every
batch of the subject's questions.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Sequence

from llm.errors import NpuboxError


class HFEngine:
    def __init__(self, hf_dir: Path | str, dtype: str = "float32", device="cpu"):
        import torch
        from transformers import AutoModelForCausalLM

        hf_dir = Path(hf_dir)
        if not (hf_dir / "config.json").is_file():
            raise NpuboxError(f"--hf-dir {hf_dir}: holds no config.json; expected a Hugging Face model directory")
        self.torch = torch
        self.device = torch.device(device)
        self.model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=getattr(torch, dtype)).to(self.device).eval()
        config = self.model.config
        self.vocab_size = config.vocab_size
        self.max_length = int(getattr(config, "max_position_embeddings", 2048))
        self._prefix: tuple[int, ...] = ()
        self._prefix_cache = None

    def score_next_token(self, prompts: Sequence[Sequence[int]], candidates: Sequence[Sequence[int]]) -> list[list[float]]:
        return self._score(prompts, candidates, cache=None)

    def score_next_token_after(
        self, prefix: Sequence[int], suffixes: Sequence[Sequence[int]], candidates: Sequence[Sequence[int]]
    ) -> list[list[float]]:
        """As ``score_next_token`` for the prompts ``prefix + suffix``; the prefix is run once and
        its cache kept for the next call with the same prefix."""
        prefix = tuple(prefix)
        if prefix != self._prefix:
            with self.torch.inference_mode():
                ids = self.torch.tensor([prefix], device=self.device)
                self._prefix_cache = self.model.get_decoder()(input_ids=ids, use_cache=True).past_key_values
            self._prefix = prefix
        cache = copy.deepcopy(self._prefix_cache)  # the forward appends to it
        cache.batch_repeat_interleave(len(suffixes))
        return self._score(suffixes, candidates, cache=cache)

    def _score(self, prompts, candidates, cache) -> list[list[float]]:
        torch = self.torch
        lengths = torch.tensor([len(p) for p in prompts])
        ids = torch.zeros(len(prompts), int(lengths.max()), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, : len(p)] = torch.tensor(p)
        # Right padding needs no attention mask in a causal model: no real position sees a pad.
        # Only the last real position of each row goes through the output layer.
        with torch.inference_mode():
            decoder = self.model.get_decoder()
            hidden = decoder(input_ids=ids.to(self.device), past_key_values=cache, use_cache=cache is not None).last_hidden_state
            last = hidden[torch.arange(len(prompts)), (lengths - 1).to(self.device)]
            logprobs = self.model.get_output_embeddings()(last).float().log_softmax(-1).cpu()
        return [logprobs[i, list(c)].tolist() for i, c in enumerate(candidates)]
