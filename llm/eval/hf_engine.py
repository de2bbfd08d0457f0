"""The transformers engine: a Hugging Face causal LM directory (config.json + safetensors).

Besides plain scoring it reads several positions of a row (a choice of several tokens, and the
shorter choices that start like it) and scores rows that all start with one shared prefix (the
header and the few-shot examples of a subject): the prefix runs once, its key/value cache is reused
for every batch of the subject's questions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from llm.compat import dtype_kwargs, repeat_cache
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
        self.model = (
            AutoModelForCausalLM.from_pretrained(hf_dir, **dtype_kwargs(getattr(torch, dtype))).to(self.device).eval()
        )
        config = self.model.config
        self.vocab_size = config.vocab_size
        self.max_length = int(getattr(config, "max_position_embeddings", 2048))
        self._prefix: tuple[int, ...] = ()
        self._prefix_cache = None

    def score_rows(
        self, shared: Sequence[int], rows: Sequence[Sequence[int]], reads: Sequence[Sequence[tuple[int, Sequence[int]]]]
    ) -> list[list[list[float]]]:
        """For each row (token ids following ``shared``) and each (position, candidates) of its reads:
        log P(next token = c | shared + row[: position + 1]) for each c. ``shared`` (may be empty) is
        run once and its cache kept for the next call with the same prefix."""
        cache = None
        prefix = tuple(shared)
        if prefix:
            if prefix != self._prefix:
                with self.torch.inference_mode():
                    ids = self.torch.tensor([prefix], device=self.device)
                    self._prefix_cache = self.model.get_decoder()(input_ids=ids, use_cache=True).past_key_values
                self._prefix = prefix
            cache = repeat_cache(self._prefix_cache, len(rows))  # a copy: the forward appends to it
        return self._score(rows, reads, cache=cache)

    def _score(self, rows, reads, cache) -> list[list[list[float]]]:
        torch = self.torch
        lengths = torch.tensor([len(p) for p in rows])
        ids = torch.zeros(len(rows), int(lengths.max()), dtype=torch.long)
        for i, p in enumerate(rows):
            ids[i, : len(p)] = torch.tensor(p)
        # Right padding needs no attention mask in a causal model: no real position sees a pad.
        # Only the positions read go through the output layer.
        row_index = [i for i, row_reads in enumerate(reads) for _ in row_reads]
        position = [pos for row_reads in reads for pos, _ in row_reads]
        with torch.inference_mode():
            decoder = self.model.get_decoder()
            hidden = decoder(
                input_ids=ids.to(self.device), past_key_values=cache, use_cache=cache is not None
            ).last_hidden_state
            picked = hidden[torch.tensor(row_index, device=self.device), torch.tensor(position, device=self.device)]
            logprobs = self.model.get_output_embeddings()(picked).float().log_softmax(-1).cpu()
        out, k = [], 0
        for row_reads in reads:
            out.append([logprobs[k + j, list(c)].tolist() for j, (_, c) in enumerate(row_reads)])
            k += len(row_reads)
        return out
