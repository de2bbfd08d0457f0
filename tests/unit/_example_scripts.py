"""Read MindSpeed-LLM / ModelLink example launch scripts the way bash runs them, for the golden tests.

The scripts are plain: ``NAME=value`` and ``export NAME=value`` lines, multi-line ``NAME="..."`` argument blocks
with backslash continuations, ``$NAME`` / ``${NAME}`` expansions, one ``$((...))`` and one
``torchrun $DISTRIBUTED_ARGS pretrain_gpt.py $GPT_ARGS ... | tee log`` line. ``overrides`` replaces a variable's
assigned value (what a user edits: ``TP=4``, ``CKPT_LOAD_DIR=...``).

The pinned sources come from ``tests.conftest.SOURCES`` (archives named ``<Name>-<commit>.tar.gz``, one top folder
``<Name>-<commit>/``), as in CI.
"""

from __future__ import annotations

import re
import shlex
import tarfile
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import SOURCES  # noqa: F401  (where the archives are, for the tests here)

REPO = Path(__file__).resolve().parents[2]
NAME = r"[A-Za-z_][A-Za-z0-9_]*"
ASSIGNMENT = re.compile(rf"^(?:export\s+)?({NAME})=(.*)$", re.S)
EXPANSION = re.compile(rf"\$\{{({NAME})\}}|\$({NAME})")
ARITHMETIC = re.compile(r"\$\(\(([^()]*)\)\)")


@dataclass
class Script:
    variables: dict[str, str]
    exports: dict[str, str]
    torchrun_args: list[str]  # the launcher's own options (DISTRIBUTED_ARGS)
    program: str  # pretrain_gpt.py
    flags: dict[str, tuple[str, ...]]  # the program's flags, each with its values (a switch: ())


def source_archive(name: str, commit: str) -> Path:
    return SOURCES / f"{name}-{commit}.tar.gz"


def read_member(name: str, commit: str, path: str, dest: Path) -> str:
    """Extract ``path`` of ``<name>-<commit>`` from its archive into ``dest`` and return its text."""
    member = f"{name}-{commit}/{path}"
    with tarfile.open(source_archive(name, commit)) as tar:
        tar.extract(member, dest, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    return (dest / member).read_text(encoding="utf-8")


def statements(text: str) -> list[str]:
    """Logical statements: continuation lines joined, comments and blank lines dropped, quotes kept."""
    text = text.replace("\\\n", " ")
    out, pending = [], ""
    for line in text.splitlines():
        pending = f"{pending}\n{line}" if pending else line
        try:
            words = shlex.split(pending, comments=True)
        except ValueError:  # an open quote: the statement goes on
            continue
        if words:
            out.append(pending.strip())
        pending = ""
    if pending.strip():
        raise ValueError(f"unterminated statement: {pending[:80]!r}")
    return out


def expand(raw: str, variables: dict[str, str]) -> str:
    """Expand ``$NAME``, ``${NAME}`` and integer ``$((...))`` outside single quotes (unset names expand to "")."""
    parts = re.split(r"('[^']*')", raw)
    out = []
    for part in parts:
        if part.startswith("'"):
            out.append(part)
            continue
        part = EXPANSION.sub(lambda m: variables.get(m.group(1) or m.group(2), ""), part)
        part = ARITHMETIC.sub(lambda m: str(_integer_expression(m.group(1))), part)
        out.append(part)
    return "".join(out)


def _integer_expression(expr: str) -> int:
    if not re.fullmatch(r"[0-9+\-* ()]+", expr):
        raise ValueError(f"unsupported arithmetic $(({expr}))")
    return int(eval(expr, {"__builtins__": {}}))  # digits and + - * only (checked above)


def parse_script(text: str, overrides: dict[str, str] | None = None) -> Script:
    overrides = overrides or {}
    variables: dict[str, str] = {}
    exports: dict[str, str] = {}
    command: list[str] | None = None
    for statement in statements(text):
        m = ASSIGNMENT.match(statement)
        if m:
            name, raw = m.groups()
            words = shlex.split(expand(raw, variables), comments=True)
            value = overrides.get(name, " ".join(words))
            variables[name] = value
            if statement.startswith("export"):
                exports[name] = value
        elif statement.startswith("torchrun"):
            command = _command_words(statement, variables)
    if command is None:
        raise ValueError("no torchrun line")
    program_at = next(i for i, w in enumerate(command) if w.endswith(".py"))
    return Script(variables, exports, command[1:program_at], command[program_at], flag_map(command[program_at + 1 :]))


def _command_words(statement: str, variables: dict[str, str]) -> list[str]:
    """Words of the command: unquoted expansions split on whitespace (as bash does), quoted words kept whole, the
    first unquoted ``|`` ends it."""
    lexer = shlex.shlex(statement, posix=True, punctuation_chars="|")
    lexer.whitespace_split = True
    words = []
    for token in lexer:
        if token == "|":
            break
        words += expand(token, variables).split() if "$" in token else [token]
    return words


def flag_map(words: list[str]) -> dict[str, tuple[str, ...]]:
    """``--a 1 --b --c x y`` -> {"--a": ("1",), "--b": (), "--c": ("x", "y")}; a flag given twice is an error."""
    flags: dict[str, tuple[str, ...]] = {}
    current = None
    for word in words:
        if word.startswith("--"):
            if word in flags:
                raise ValueError(f"{word} given twice")
            flags[word] = ()
            current = word
        elif current is None:
            raise ValueError(f"value {word!r} before any flag")
        else:
            flags[current] = (*flags[current], word)
    return flags


def same_values(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Equal flag values, numbers compared as numbers (``1e-1`` == ``0.1``, ``1000000`` == ``1000000.0``)."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x == y:
            continue
        try:
            if float(x) != float(y):
                return False
        except ValueError:
            return False
    return True


def flag_differences(ours: dict[str, tuple[str, ...]], theirs: dict[str, tuple[str, ...]]) -> list[str]:
    """Every way two flag sets differ, one line each (empty: equal as sets with values)."""
    out = [f"only ours: {k} {' '.join(v)}" for k, v in ours.items() if k not in theirs]
    out += [f"only the script: {k} {' '.join(v)}" for k, v in theirs.items() if k not in ours]
    out += [
        f"{k}: ours {' '.join(ours[k])!r}, script {' '.join(theirs[k])!r}"
        for k in ours
        if k in theirs and not same_values(ours[k], theirs[k])
    ]
    return out


def extract_archive(archive, root) -> None:
    """Unpack a pinned source archive into ``root`` (with tarfile's data filter where this Python has it:
    3.11.4 and later; a twin's Debian Python 3.11.2 has not)."""
    import tarfile

    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(root, filter="data")
        else:
            tar.extractall(root)
