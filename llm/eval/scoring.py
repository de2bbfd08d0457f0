"""Log-likelihood scoring of each choice's answer tokens, batched by length.

A choice's score is log P(continuation tokens | prompt). The prompt and the continuation are
tokenized the way lm-evaluation-harness does it (the prompt alone, then the continuation as the
tail of the tokenized prompt + continuation), so both tools score the same token sequences.

Every distinct token prefix is run through the model once: when each answer is one token (" A",
" B", ... in most vocabularies) the four choices of a question are read off one forward pass at
the prompt's last position. Longer answers add one prefix per extra token. When the engine can
(``score_next_token_after``), the part every prompt of a subject shares (header and few-shot
examples) runs once per subject and only each question's own tokens run per question.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence


class Engine(Protocol):
    """What the scorer needs from a model. ``max_length`` is its context window in tokens."""

    max_length: int

    def score_next_token(self, prompts: Sequence[Sequence[int]], candidates: Sequence[Sequence[int]]) -> list[list[float]]:
        """For each prompt (token ids), log P(next token = c) for each c in its candidates."""
        ...


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
    truncated: int  # prefixes longer than the engine's window (left-truncated)


def score(
    engine: Engine,
    requests: Sequence[Request],
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> Scored:
    """Score every choice of every request. ``on_start(total)`` is told how many prefixes will run,
    ``on_batch(n)`` is called after each batch of n of them."""
    # prefix -> the next tokens whose log-probability we need after it
    needed: dict[tuple[int, ...], set[int]] = {}
    shared_len: dict[tuple[int, ...], int] = {}
    for req in requests:
        for cont in req.choices:
            for j, token in enumerate(cont):
                prefix = req.context + cont[:j]
                needed.setdefault(prefix, set()).add(token)
                shared_len[prefix] = req.shared

    # Group the prefixes by the shared start they begin with; the rest (and prompts longer than
    # the window, which are left-truncated) run whole.
    can_share = hasattr(engine, "score_next_token_after")
    groups: dict[tuple[int, ...], list[tuple[int, ...]]] = {(): []}
    truncated = 0
    for p in needed:
        k = shared_len[p] if can_share and len(p) <= engine.max_length else 0
        groups.setdefault(p[:k], []).append(p)
        truncated += len(p) > engine.max_length
    if on_start:
        on_start(len(needed))

    logprob: dict[tuple[tuple[int, ...], int], float] = {}
    for shared, members in groups.items():
        # Longest first, like lm-evaluation-harness: a batch that does not fit fails at once.
        members.sort(key=lambda p: (-len(p), p))
        for start in range(0, len(members), batch_size):
            batch = members[start : start + batch_size]
            candidates = [sorted(needed[p]) for p in batch]
            if shared:
                values = engine.score_next_token_after(shared, [p[len(shared) :] for p in batch], candidates)
            else:
                values = engine.score_next_token([p[-engine.max_length :] for p in batch], candidates)
            for p, cands, vals in zip(batch, candidates, values):
                for token, value in zip(cands, vals):
                    logprob[(p, token)] = value
            if on_batch:
                on_batch(len(batch))

    out = []
    for req in requests:
        out.append(
            [sum(logprob[(req.context + cont[:j], tok)] for j, tok in enumerate(cont)) for cont in req.choices]
        )
    return Scored(out, len(needed) + len(groups) - 1, truncated)


def argmax(values: Sequence[float]) -> int:
    """Index of the largest value; the first one on a tie (as numpy's argmax)."""
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best
