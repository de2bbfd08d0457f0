"""Turn rows into token sequences: pretraining text, or instruction data (alpaca, sharegpt) with a chat template.

A handler works in three steps so that the slow one runs off the main thread:
    prepare(batch)  main thread: pick and check the fields of each row (bad rows are skipped here)
    encode(work)    worker thread: the Rust tokenizer (it releases the GIL) and ids -> numpy
    emit(encoded)   main thread, in input order: the arrays each output file receives
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llm.compat import encode_batch
from llm.errors import NpuboxError
from llm.preprocess.indexed_writer import optimal_dtype
from llm.preprocess.readers import MAX_DOCUMENT_BYTES, UNDECODABLE, Batch, TooLarge
from llm.preprocess.report import SkipReport
from llm.tokenizer import LoadedTokenizer

IGNORE_INDEX = -100  # label of prompt and padding tokens: no loss there
Arrays = dict[str, tuple[np.ndarray, np.ndarray]]  # output name -> (ids back to back, length of each sequence)


@dataclass
class Work:
    path: Path
    unit: str
    numbers: list[int]  # row number of each kept row
    fields: list[list]  # pretrain: per json key, the texts; instruction: per row, its (text, learned) segments


@dataclass
class Encoded:
    work: Work
    arrays: Arrays = field(default_factory=dict)
    samples: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # instruction: (input_ids, labels)


def unusable(row, max_document_bytes: int) -> str | None:
    """Why the reader could not make a row of a record, or None."""
    if row is UNDECODABLE:
        return "undecodable line (not UTF-8 / not a JSON object)"
    if isinstance(row, TooLarge):
        return too_large(max_document_bytes)
    return None


def too_large(max_document_bytes: int) -> str:
    return f"document larger than {max_document_bytes / 2**20:g} MB (--max-document-mb)"


def flat_ids(encodings) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter(map(len, encodings), dtype=np.int64, count=len(encodings))
    ids = np.fromiter(itertools.chain.from_iterable(e.ids for e in encodings), dtype=np.int64, count=int(lengths.sum()))
    return ids, lengths


def append_after_each(ids: np.ndarray, lengths: np.ndarray, token: int) -> tuple[np.ndarray, np.ndarray]:
    """Insert ``token`` after every sequence of a flat ids array."""
    new_lengths = lengths + 1
    out = np.empty(len(ids) + len(lengths), dtype=ids.dtype)
    ends = np.cumsum(new_lengths) - 1
    keep = np.ones(len(out), dtype=bool)
    keep[ends] = False
    out[ends] = token
    out[keep] = ids
    return out, new_lengths


class PretrainHandler:
    """Each row's ``--json-keys`` texts, tokenized as the tokenizer itself does (special tokens included),
    EOD appended when asked; one output per key: ``PREFIX_<key>_document``."""

    def __init__(
        self, tok: LoadedTokenizer, json_keys: list[str], append_eod: bool, max_document_bytes: int = MAX_DOCUMENT_BYTES
    ):
        if append_eod and tok.eod_id is None:
            raise NpuboxError(
                f"tokenizer {tok.source}: --append-eod needs an end-of-document token, but tokenizer_config.json "
                f"names no eos_token and none of {', '.join(('<|endoftext|>', '</s>'))} is in the vocabulary"
            )
        self.tok = tok
        self.keys = json_keys
        self.append_eod = append_eod
        self.dtype = optimal_dtype(tok.vocab_size)
        self.outputs = [f"{key}_document" for key in json_keys]
        self.columns = json_keys
        self.max_document_bytes = max_document_bytes
        self.keys_seen: set[str] = set()  # of rows that lack a --json-keys key, to name them in the error

    def prepare(self, batch: Batch, skips: SkipReport) -> Work:
        work = Work(batch.path, batch.unit, [], [[] for _ in self.keys])
        for number, row in zip(batch.numbers, batch.rows):
            reason = unusable(row, self.max_document_bytes)
            if reason is None:
                for key in self.keys:
                    value = row.get(key)
                    if value is None:
                        reason = f"missing key '{key}'" if key not in row else f"key '{key}' is null"
                        if key not in row and len(self.keys_seen) < 50:
                            self.keys_seen.update(k for k in row if isinstance(k, str))
                    elif not isinstance(value, str):
                        reason = f"non-string '{key}' ({type(value).__name__})"
                    elif not value.strip():
                        reason = f"empty text in '{key}'"
                    elif len(value) > self.max_document_bytes:
                        reason = too_large(self.max_document_bytes)
                    if reason:
                        break
            if reason:
                skips.skip(batch.path, batch.unit, number, reason)
                continue
            work.numbers.append(number)
            for texts, key in zip(work.fields, self.keys):
                texts.append(row[key])
        return work

    def encode(self, work: Work) -> Encoded:
        encoded = Encoded(work)
        for name, texts in zip(self.outputs, work.fields):
            ids, lengths = flat_ids(encode_batch(self.tok.tokenizer, texts, add_special_tokens=True))
            if self.append_eod:
                ids, lengths = append_after_each(ids, lengths, self.tok.eod_id)
            encoded.arrays[name] = (ids, lengths)
        return encoded

    def emit(self, encoded: Encoded, skips: SkipReport, summary) -> Arrays:
        summary.documents += len(encoded.work.numbers)
        return encoded.arrays

    def flush(self, summary) -> Arrays:
        return {}


# --- instruction data ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatTemplate:
    """How a conversation becomes text: prompt parts get label -100, assistant parts are learned."""

    system: str
    user: str  # {content}
    assistant_prefix: str  # ends the prompt
    assistant: str  # {content}; the learned part
    default_system: str


QWEN = ChatTemplate(
    system="<|im_start|>system\n{content}<|im_end|>\n",
    user="<|im_start|>user\n{content}<|im_end|>\n",
    assistant_prefix="<|im_start|>assistant\n",
    assistant="{content}<|im_end|>\n",
    default_system="You are a helpful assistant.",
)
TEMPLATES = {"qwen": QWEN}
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
PACKED_OUTPUTS = ["packed_input_ids_document", "packed_attention_mask_document", "packed_labels_document"]


class BadRow(Exception):
    pass


def _text(row: dict, key: str, required: bool = True) -> str:
    if key not in row or row[key] is None:
        if required:
            raise BadRow(f"missing key '{key}'")
        return ""
    value = row[key]
    if not isinstance(value, str):
        raise BadRow(f"non-string '{key}' ({type(value).__name__})")
    if required and not value.strip():
        raise BadRow(f"empty text in '{key}'")
    return value


class InstructionHandler:
    """alpaca (instruction, input, output[, system]) or sharegpt (conversations: [{from, value}, ...][, system])
    rows rendered with a chat template; writes ``PREFIX_packed_{input_ids,attention_mask,labels}_document``
    (int32, as MindSpeed-LLM writes them, since labels hold -100).

    With ``seq_length``: samples longer than it are truncated; with ``pack`` (the default) consecutive samples
    share a sequence of exactly ``seq_length`` tokens, padded with the pad token (attention_mask 0, label -100)."""

    def __init__(
        self,
        tok: LoadedTokenizer,
        style: str,
        prompt_type: str,
        seq_length: int | None,
        pack: bool,
        max_document_bytes: int = MAX_DOCUMENT_BYTES,
    ):
        if prompt_type not in TEMPLATES:
            raise NpuboxError(f"--prompt-type {prompt_type!r} is not known; expected one of {', '.join(TEMPLATES)}")
        self.template = TEMPLATES[prompt_type]
        self.tok = tok
        self.style = style
        self.seq_length = seq_length
        self.pack = pack and seq_length is not None
        if self.pack and tok.pad_id is None:
            raise NpuboxError(f"tokenizer {tok.source}: packing needs a pad or eos token; none is configured")
        self.dtype = np.dtype(np.int32)
        self.outputs = PACKED_OUTPUTS
        self.columns = (
            ["instruction", "input", "output", "system"] if style == "alpaca" else ["conversations", "system"]
        )
        self.max_document_bytes = max_document_bytes
        self.keys_seen: set[str] = set()
        self._pack_ids: list[np.ndarray] = []
        self._pack_labels: list[np.ndarray] = []
        self._pack_len = 0

    # prepare: rows -> [(text, learned), ...] segments
    def segments(self, row: dict) -> list[tuple[str, bool]]:
        t = self.template
        if self.style == "alpaca":
            instruction, extra = _text(row, "instruction"), _text(row, "input", required=False)
            output = _text(row, "output")
            system = _text(row, "system", required=False) or t.default_system
            user = f"{instruction}\n{extra}" if extra.strip() else instruction
            return [
                (t.system.format(content=system) + t.user.format(content=user) + t.assistant_prefix, False),
                (t.assistant.format(content=output), True),
            ]
        turns = row.get("conversations")
        if not isinstance(turns, list) or not turns:
            raise BadRow("missing key 'conversations'" if turns is None else "'conversations' is not a non-empty list")
        system = _text(row, "system", required=False) or t.default_system
        messages = []
        for turn in turns:
            if not isinstance(turn, dict):
                raise BadRow("a turn of 'conversations' is not an object")
            role = SHAREGPT_ROLES.get(turn.get("from", turn.get("role")))
            value = turn.get("value", turn.get("content"))
            if role is None or not isinstance(value, str):
                raise BadRow("a turn of 'conversations' lacks from/value strings (human, gpt, system)")
            messages.append((role, value))
        if messages[0][0] == "system":
            system = messages.pop(0)[1]
        roles = [r for r, _ in messages]
        if not roles or roles[-1] != "assistant" or roles != ["user", "assistant"] * (len(roles) // 2):
            raise BadRow("conversation turns do not alternate human, gpt, ..., ending with gpt")
        if any(not v.strip() for _, v in messages):
            raise BadRow("empty text in a turn of 'conversations'")
        out: list[tuple[str, bool]] = []
        prompt = t.system.format(content=system)
        for (_, question), (_, answer) in zip(messages[::2], messages[1::2]):
            out.append((prompt + t.user.format(content=question) + t.assistant_prefix, False))
            out.append((t.assistant.format(content=answer), True))
            prompt = ""
        return out

    def prepare(self, batch: Batch, skips: SkipReport) -> Work:
        work = Work(batch.path, batch.unit, [], [])
        for number, row in zip(batch.numbers, batch.rows):
            try:
                reason = unusable(row, self.max_document_bytes)
                if reason:
                    raise BadRow(reason)
                segments = self.segments(row)
                if sum(len(text) for text, _ in segments) > self.max_document_bytes:
                    raise BadRow(too_large(self.max_document_bytes))
            except BadRow as e:
                skips.skip(batch.path, batch.unit, number, str(e))
                continue
            work.numbers.append(number)
            work.fields.append(segments)
        return work

    def encode(self, work: Work) -> Encoded:
        flat = [text for segments in work.fields for text, _ in segments]
        encodings = encode_batch(self.tok.tokenizer, flat, add_special_tokens=False)
        encoded = Encoded(work)
        it = iter(encodings)
        for segments in work.fields:
            ids, labels = [], []
            for (_, learned), enc in zip(segments, it):
                seg = np.asarray(enc.ids, dtype=np.int32)
                ids.append(seg)
                labels.append(seg if learned else np.full(len(seg), IGNORE_INDEX, dtype=np.int32))
            encoded.samples.append((np.concatenate(ids), np.concatenate(labels)))
        return encoded

    def emit(self, encoded: Encoded, skips: SkipReport, summary) -> Arrays:
        sequences: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (input_ids, attention_mask, labels)
        work = encoded.work
        for number, (ids, labels) in zip(work.numbers, encoded.samples):
            n = self.seq_length
            if n is not None and len(ids) > n:
                if (labels[:n] == IGNORE_INDEX).all():
                    skips.skip(work.path, work.unit, number, f"prompt fills all of --seq-length {n}")
                    continue
                ids, labels = ids[:n], labels[:n]
                summary.truncated += 1
            summary.documents += 1
            if not self.pack:
                sequences.append((ids, np.ones(len(ids), dtype=np.int32), labels))
                continue
            if self._pack_len + len(ids) > n:
                sequences.append(self._close_pack())
            self._pack_ids.append(ids)
            self._pack_labels.append(labels)
            self._pack_len += len(ids)
        return self._arrays(sequences)

    def flush(self, summary) -> Arrays:
        return self._arrays([self._close_pack()] if self._pack_len else [])

    def _close_pack(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        real, pad = self._pack_len, self.seq_length - self._pack_len
        ids = np.concatenate(self._pack_ids + [np.full(pad, self.tok.pad_id, dtype=np.int32)])
        mask = np.concatenate([np.ones(real, dtype=np.int32), np.zeros(pad, dtype=np.int32)])
        labels = np.concatenate(self._pack_labels + [np.full(pad, IGNORE_INDEX, dtype=np.int32)])
        self._pack_ids, self._pack_labels, self._pack_len = [], [], 0
        return ids, mask, labels

    def _arrays(self, sequences: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Arrays:
        if not sequences:
            return {}
        lengths = np.array([len(seq[0]) for seq in sequences], dtype=np.int64)
        return {name: (np.concatenate([seq[i] for seq in sequences]), lengths) for i, name in enumerate(PACKED_OUTPUTS)}
