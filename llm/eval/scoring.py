"""Log-likelihood scoring of each choice's answer tokens, batched by length.

A choice's score is log P(continuation tokens | prompt). The prompt and the continuation are
tokenized the way lm-evaluation-harness does it (the prompt alone, then the continuation as the
tail of the tokenized prompt + continuation), so both tools score the same token sequences.

Every token sequence runs through the model once, and one row serves every log-probability that
can be read off it: when each answer is one token (" A", " B", ... in most vocabularies) the four
choices of a question are read off one row at the prompt's last position; an answer of several
tokens is read along one row (prompt + all its tokens but the last), and a shorter answer that
starts the same way (" no" beside " y"+"es") is read off that row too. An engine that can
(``score_rows``) also runs the part every prompt of a subject shares (header and few-shot
examples) once per subject, and reads several positions of a row; for an engine that reads only
each row's last position (``score_next_token``), every prefix is its own row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol


class NextTokenEngine(Protocol):
    """A model that reads each row's last position. ``max_length`` is its context window in tokens."""

    max_length: int

    def score_next_token(
        self, prompts: Sequence[Sequence[int]], candidates: Sequence[Sequence[int]]
    ) -> list[list[float]]:
        """For each prompt (token ids), log P(next token = c) for each c in its candidates."""
        ...


class RowsEngine(Protocol):
    """A model that reads several positions of a row after a shared prefix. ``max_length`` is its context
    window in tokens. When an engine has ``score_rows``, the scorer calls only that: prefixes share rows and
    a subject's start runs once."""

    max_length: int

    def score_rows(
        self, shared: Sequence[int], rows: Sequence[Sequence[int]], reads: Sequence[Sequence[tuple[int, Sequence[int]]]]
    ) -> list[list[list[float]]]:
        """The rows are token ids that follow ``shared`` (a prefix common to all of them, possibly empty,
        that it may run once), and for each row, reads is a list of (position, candidates): log P(next
        token = c) after the row's tokens up to that position, for each c."""
        ...


# What the scorer needs from a model: one of the two.
Engine = NextTokenEngine | RowsEngine


@dataclass(frozen=True)
class Request:
    context: tuple[int, ...]
    choices: tuple[tuple[int, ...], ...]  # continuation tokens of each choice
    shared: int = 0  # leading context tokens that other requests share (0: none)


def encode(
    tokenize: Callable[[str], list[int]], context: str, continuations: Sequence[str], shared_text: str = ""
) -> Request:
    """lm-evaluation-harness's pairing: trailing spaces of the context move to the continuation,
    the context is tokenized alone, each continuation is what follows it in the whole string.

    ``shared_text``, a start of ``context`` common to many requests, is marked as shared only when
    its tokens are exactly the first tokens of the context (the tokenizer splits there)."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuations = [context[-n_spaces:] + c for c in continuations]
        context = context[:-n_spaces]
    ctx = tuple(tokenize(context))
    choices = []
    for cont in continuations:
        whole = tokenize(context + cont)
        choices.append(tuple(whole[len(ctx) :]))
    shared = 0
    if shared_text and context.startswith(shared_text) and len(shared_text) < len(context):
        head = tuple(tokenize(shared_text))
        if ctx[: len(head)] == head:
            shared = len(head)
    return Request(ctx, tuple(choices), shared)


@dataclass(frozen=True)
class Scored:
    choice_logprobs: list[list[float]]  # per request, per choice
    forwards: int  # rows run through the model (a shared start counts once)
    truncated: int  # rows longer than the engine's window (left-truncated)


def _rows_of(req: Request) -> list[tuple[int, ...]]:
    """The continuation paths to run after the context: each choice's tokens but its last, without
    the paths that are the start of a longer one (that one's row has their positions too)."""
    paths = sorted({c[:-1] for c in req.choices}, key=len, reverse=True)
    kept: list[tuple[int, ...]] = []
    for path in paths:
        if not any(longer[: len(path)] == path for longer in kept):
            kept.append(path)
    return kept


def _run(engine, rich: bool, shared, rows, reads) -> list[list[list[float]]]:
    if rich:
        return engine.score_rows(shared, rows, reads)
    # rows are the prefixes themselves: one read, at the last position
    return [[values] for values in engine.score_next_token(rows, [r[0][1] for r in reads])]


def score(
    engine: Engine,
    requests: Sequence[Request],
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> Scored:
    """Score every choice of every request. ``on_start(total)`` is told how many rows will run,
    ``on_batch(n)`` is called after each batch of n of them."""
    rich = hasattr(engine, "score_rows")
    # row -> {prefix length: the next tokens whose log-probability is read after that prefix}
    reads: dict[tuple[int, ...], dict[int, set[int]]] = {}
    shared_len: dict[tuple[int, ...], int] = {}
    truncated = 0
    for req in requests:
        paths = _rows_of(req) if rich else []
        for cont in req.choices:
            row = req.context + next((p for p in paths if p[: len(cont) - 1] == cont[:-1]), ())
            for j, token in enumerate(cont):
                prefix = req.context + cont[:j]
                # a row past the window is left-truncated, which moves its positions: each prefix runs alone
                at = row if rich and len(row) <= engine.max_length else prefix
                reads.setdefault(at, {}).setdefault(len(prefix), set()).add(token)
                shared_len[at] = req.shared

    # Group the rows by the shared start they begin with; the rest (and rows longer than the
    # window, which are left-truncated) run whole.
    groups: dict[tuple[int, ...], list[tuple[int, ...]]] = {(): []}
    for row in reads:
        k = shared_len[row] if rich and len(row) <= engine.max_length else 0
        groups.setdefault(row[:k], []).append(row)
        truncated += len(row) > engine.max_length
    if on_start:
        on_start(len(reads))

    logprob: dict[tuple[tuple[int, ...], int], float] = {}
    for shared, members in groups.items():
        # Longest first, like lm-evaluation-harness: a batch that does not fit fails at once.
        members.sort(key=lambda r: (-len(r), r))
        for start in range(0, len(members), batch_size):
            batch = members[start : start + batch_size]
            passed = [r[len(shared) :] if shared else r[-engine.max_length :] for r in batch]
            # (prefix length, its candidate tokens, sorted) for each prefix read off each row
            row_reads = [[(end, sorted(tokens)) for end, tokens in sorted(reads[r].items())] for r in batch]
            # (position in the row as passed, candidate tokens) for each prefix read off the row
            wanted = [
                [(end - 1 - (len(r) - len(x)), tokens) for end, tokens in rr]
                for r, x, rr in zip(batch, passed, row_reads)
            ]
            values = _run(engine, rich, shared, passed, wanted)
            for r, rr, row_values in zip(batch, row_reads, values):
                for (end, tokens), vals in zip(rr, row_values):
                    for token, value in zip(tokens, vals):
                        logprob[(r[:end], token)] = value
            if on_batch:
                on_batch(len(batch))

    out = []
    for req in requests:
        out.append([sum(logprob[(req.context + cont[:j], tok)] for j, tok in enumerate(cont)) for cont in req.choices])
    return Scored(out, len(reads) + len(groups) - 1, truncated)


def argmax(values: Sequence[float]) -> int:
    """Index of the largest value; the first one on a tie (as numpy's argmax)."""
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best
