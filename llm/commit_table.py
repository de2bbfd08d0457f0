"""Tables keyed by a pinned source's full commit SHA (the engines' stacks and guides): one lookup for both."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")
MIN_PREFIX = 7


def find_by_commit(table: dict[str, T], commit: str) -> T | None:
    """The entry of ``table`` for ``commit``: its full SHA or a prefix of 7+ characters that only it starts with."""
    commit = commit.strip().lower()
    found = [entry for sha, entry in table.items() if len(commit) >= MIN_PREFIX and sha.startswith(commit)]
    return found[0] if len(found) == 1 else None
