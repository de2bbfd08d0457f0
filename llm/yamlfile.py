"""Load a YAML file (an environment spec, a recipe) into a pydantic model with errors that name the file,
the field path, the bad value and what was expected; the base of those models and the rule for their names."""

from __future__ import annotations

import re
import reprlib
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from llm.errors import NpuboxError

M = TypeVar("M", bound=BaseModel)
MAX_YAML_BYTES = 256 << 10  # the largest spec or recipe read (today's are under 10 KB); 256 KiB parse in ~2 s
# The name of a spec or a recipe, which is also its file's stem (envs/<name>.yaml, llm/recipes/<name>.yaml).
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
NAME_RULE = "lowercase letters, digits, '.', '_' and '-'"


class Strict(BaseModel):
    """Every model read from YAML: unknown fields are errors, values are not coerced, instances are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ConfigError(NpuboxError):
    def __init__(self, path: Path | str, problems: list[str]):
        self.path = str(path)
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{path}: invalid ({len(problems)} problem{'s' if len(problems) > 1 else ''}):\n{lines}")


def _field_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _short(value: object, limit: int = 80) -> str:
    """repr(value) cut to ``limit`` characters, built only as far as needed: its cost is bounded however
    large the value (a long list, a deep mapping) is."""
    parts: list[str] = []
    size = 0

    def emit(text: str) -> bool:  # True once enough is written
        nonlocal size
        parts.append(text)
        size += len(text)
        return size > limit

    def walk(v: object) -> bool:
        if isinstance(v, dict):
            return (
                emit("{")
                or any((i and emit(", ")) or walk(k) or emit(": ") or walk(x) for i, (k, x) in enumerate(v.items()))
                or emit("}")
            )
        if isinstance(v, (list, tuple)):
            opening, closing = "[]" if isinstance(v, list) else "()"
            return emit(opening) or any((i and emit(", ")) or walk(x) for i, x in enumerate(v)) or emit(closing)
        if isinstance(v, str):
            return emit(repr(v[: limit + 1]))
        if isinstance(v, int) and v.bit_length() > 128:
            return emit(f"<an integer of {v.bit_length()} bits>")
        return emit(reprlib.repr(v))

    walk(value)
    text = "".join(parts)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_validation_error(err: ValidationError) -> list[str]:
    problems = []
    for e in err.errors(include_url=False):
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        field = _field_path(loc)
        if e["type"] == "missing":
            problems.append(f"field `{field}` is missing: {e['msg'].lower()}")
        elif e["type"] == "extra_forbidden":
            problems.append(f"field `{field}` is not a known field (value {_short(e['input'])}); check its spelling")
        else:
            msg = e["msg"]
            msg = msg.removeprefix("Value error, ").removeprefix("Input should be ")
            problems.append(f"field `{field}` has value {_short(e['input'])}: expected {msg[0].lower() + msg[1:]}")
    return problems


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load, except that a key given twice in one mapping is an error (YAML keeps the last silently),
    and anchors and aliases are refused: a few hundred bytes of nested aliases expand to gigabytes."""

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(
                None,
                None,
                "anchors and aliases (&name, *name) are not allowed here; write each value out",
                event.start_mark,
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` may repeat keys on purpose
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                continue  # unhashable keys: the base constructor reports them
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} appears twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def parse_yaml_text(text: str, path: Path | str) -> object:
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        where = ""
        mark = getattr(e, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(e, "problem", None) or str(e)
        # An unclosed bracket is reported where parsing gave up; also say where the construct began.
        context, context_mark = getattr(e, "context", None), getattr(e, "context_mark", None)
        if context and context_mark is not None:
            problem += f" ({context} started at line {context_mark.line + 1}, column {context_mark.column + 1})"
        raise ConfigError(path, [f"malformed YAML{where}: {problem}"]) from None
    except ValueError as e:  # a value PyYAML cannot build, e.g. an integer over Python's 4300-digit limit
        raise ConfigError(path, [f"malformed YAML: {str(e).split(';')[0]}"]) from None


def load_model(path: Path | str, model: type[M], *, context: dict | None = None) -> M:
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_YAML_BYTES + 1)
        if len(raw) > MAX_YAML_BYTES:
            raise NpuboxError(f"{path}: larger than {MAX_YAML_BYTES:,} bytes; a spec or recipe is a few kilobytes")
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise NpuboxError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise NpuboxError(f"{path}: cannot be read ({e})") from None
    data = parse_yaml_text(text, path)
    if not isinstance(data, dict):
        raise ConfigError(path, [f"the top level must be a mapping of fields, got {type(data).__name__}"])
    try:
        return model.model_validate(data, context=context)
    except ValidationError as e:
        raise ConfigError(path, describe_validation_error(e)) from None
