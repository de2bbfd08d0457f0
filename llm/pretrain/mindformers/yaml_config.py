"""The guide's yaml with npubox's values on top: dotted keys (``train_dataset.data_loader.dataset_dir``) set in the
loaded document, each of which must already be in it (a typo is an error, not a new key MindFormers ignores), and
the list of what changed, for ``--dry-run``. YAML anchors of the guide's file keep their meaning: a value set
through one alias is the value of every use (``train_dataset_task.dataset_config`` is ``*train_dataset``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from llm.errors import NpuboxError

MAX_YAML_BYTES = 1 << 20


def load_guide_yaml(path: Path) -> dict:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise NpuboxError(f"{path}: not found; expected the guide's training yaml in the MindFormers sources") from None
    if len(raw) > MAX_YAML_BYTES:
        raise NpuboxError(f"{path}: over {MAX_YAML_BYTES} bytes; not a MindFormers training yaml")
    doc = yaml.safe_load(raw)
    if not isinstance(doc, dict):
        raise NpuboxError(f"{path}: expected a mapping at the top")
    return doc


def get_path(doc: dict, key: str) -> Any:
    node: Any = doc
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise NpuboxError(f"the guide's yaml has no key {key!r} (no {part!r} there)")
        node = node[part]
    return node


def set_path(doc: dict, key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = get_path(doc, ".".join(parents)) if parents else doc
    if not isinstance(node, dict) or last not in node:
        raise NpuboxError(f"the guide's yaml has no key {key!r}; keys there: {', '.join(map(str, node))}")
    node[last] = value


def compose(doc: dict, overrides: dict[str, Any], additions: dict[str, Any] | None = None) -> tuple[dict, list[str]]:
    """(the document with ``overrides`` applied, one ``key: old -> new`` line per value that changed).

    ``additions`` may also name a key the guide's yaml leaves out (its parent must be there): one MindFormers reads
    with a default of its own, such as ``model.model_config.use_rope_slice``; it is listed as ``key: (absent) -> new``.
    """
    composed = yaml.safe_load(yaml.safe_dump(doc, sort_keys=False))  # a copy that keeps the anchors' sharing
    changes = []
    for key, value in overrides.items():
        old = get_path(composed, key)
        if old != value:
            set_path(composed, key, value)
            changes.append(f"{key}: {old!r} -> {value!r}")
    for key, value in (additions or {}).items():
        parent, _, last = key.rpartition(".")
        node = get_path(composed, parent) if parent else composed
        if not isinstance(node, dict):
            raise NpuboxError(f"the guide's yaml has no mapping {parent!r} to add {last!r} to")
        if last not in node:
            node[last] = value
            changes.append(f"{key}: (absent) -> {value!r}")
        elif node[last] != value:
            changes.append(f"{key}: {node[last]!r} -> {value!r}")
            node[last] = value
    return composed, changes


def parse_assignment(text: str) -> tuple[str, Any]:
    """``--set key.path=VALUE``: VALUE read as YAML (numbers, booleans, lists), e.g. ``runner_config.epochs=1``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise NpuboxError(f"--set {text!r}: expected KEY=VALUE, e.g. runner_config.epochs=1")
    return key.strip(), yaml.safe_load(value)
