"""Small MMLU-, C-Eval- and BoolQ-format evaluation sets of our own, about Python's standard
library (the tiny model's corpus is stdlib docstrings), written in the layouts the readers expect:

    <out>/mmlu/test/{subject}_test.csv   <out>/mmlu/dev/{subject}_dev.csv     (headerless)
    <out>/ceval/val/{subject}_val.csv    <out>/ceval/dev/{subject}_dev.csv    (with header)
    <out>/boolq/dev.jsonl                <out>/boolq/train.jsonl

The questions are generated from the fact table below with a fixed seed, so every run writes the
same bytes. Each task directory is replaced whole (atomic).

    python -m llm.eval.sample_sets --out <workspace>/eval      (or: write_sample_sets(ws.eval))
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
from pathlib import Path

from llm.atomic import atomic_dir

# (module, name, what it does) — true statements about the standard library.
FACTS: list[tuple[str, str, str]] = [
    ("json", "dumps", "serialize an object to a JSON formatted string"),
    ("json", "loads", "deserialize a JSON document from a string"),
    ("os", "getcwd", "return the current working directory"),
    ("os", "listdir", "return the names of the entries in a directory"),
    ("os.path", "join", "join path components with the separator"),
    ("os.path", "exists", "test whether a path exists"),
    ("sys", "exit", "exit from the interpreter by raising SystemExit"),
    ("math", "sqrt", "return the square root of a number"),
    ("math", "floor", "return the largest integer not greater than a number"),
    ("random", "shuffle", "shuffle a list in place"),
    ("random", "choice", "choose a random element from a non-empty sequence"),
    ("re", "compile", "compile a regular expression pattern"),
    ("re", "sub", "replace the matches of a pattern in a string"),
    ("time", "sleep", "suspend execution for a number of seconds"),
    ("time", "time", "return the current time in seconds since the epoch"),
    ("shutil", "copyfile", "copy the contents of one file to another"),
    ("shutil", "rmtree", "delete an entire directory tree"),
    ("hashlib", "sha256", "return a SHA-256 hash object"),
    ("base64", "b64encode", "encode bytes with Base64"),
    ("gzip", "open", "open a gzip-compressed file"),
    ("csv", "reader", "return a reader object that iterates over lines of CSV data"),
    ("pickle", "dump", "write the pickled representation of an object to a file"),
    ("copy", "deepcopy", "return a deep copy of an object"),
    ("itertools", "chain", "iterate over several iterables one after another"),
    ("itertools", "permutations", "return successive permutations of the elements"),
    ("functools", "reduce", "apply a function of two arguments cumulatively to the items"),
    ("functools", "lru_cache", "decorate a function with a least recently used cache"),
    ("collections", "Counter", "count hashable objects in a dict subclass"),
    ("collections", "deque", "build a double-ended queue"),
    ("heapq", "heappush", "push an item onto a heap"),
    ("bisect", "insort", "insert an item into a sorted list keeping it sorted"),
    ("subprocess", "run", "run a command and wait for it to complete"),
    ("threading", "Lock", "create a primitive lock object"),
    ("socket", "socket", "create a new network socket"),
    ("urllib.parse", "quote", "replace special characters in a string with percent escapes"),
    ("datetime", "timedelta", "represent a duration between two dates or times"),
    ("tempfile", "mkdtemp", "create a temporary directory"),
    ("textwrap", "dedent", "remove common leading whitespace from every line"),
    ("string", "capwords", "capitalize each word of a string"),
    ("zlib", "compress", "compress bytes with the deflate algorithm"),
]

BOOL_EXPRESSIONS = [
    "True and False",
    "True or False",
    "not True",
    "not False",
    "True and not False",
    "False or not True",
    "not (True and False)",
    "(True or False) and False",
    "True and True and False",
    "False or False or True",
    "not (False or False)",
    "True or not True",
    "not not True",
    "(False and True) or True",
    "not (True or False)",
    "False and (True or True)",
    "True and (False or True)",
    "not False and not True",
    "(not False) or False",
    "not (not False)",
]
BOOL_CHOICES = ["True", "False", "None", "an error is raised"]

N_DEV = 5
SEED = 1234


def _options(rng: random.Random, correct: str, pool: list[str]) -> tuple[list[str], str]:
    """Four options (the correct one and three distinct others from pool), shuffled; and its letter."""
    others = sorted({p for p in pool if p != correct})
    options = [correct, *rng.sample(others, 3)]
    rng.shuffle(options)
    return options, "ABCD"[options.index(correct)]


def _module_of(rng: random.Random, zh: bool = False) -> list[list[str]]:
    modules = [m for m, _, _ in FACTS]
    rows = []
    for module, name, _ in FACTS:
        options, letter = _options(rng, module, modules)
        q = (
            f"Python 标准库中哪个模块提供 {name}？"
            if zh
            else f"Which Python standard library module provides `{name}`?"
        )
        rows.append([q, *options, letter])
    return rows


def _what_does(rng: random.Random) -> list[list[str]]:
    descriptions = [d for _, _, d in FACTS]
    rows = []
    for module, name, description in FACTS:
        options, letter = _options(rng, description, descriptions)
        rows.append([f"What does `{module}.{name}` do?", *options, letter])
    return rows


def _bool_values(rng: random.Random, zh: bool = False) -> list[list[str]]:
    rows = []
    for expr in BOOL_EXPRESSIONS:
        value = str(eval(expr, {"__builtins__": {}}))  # our own constant expressions above
        options = BOOL_CHOICES[:]
        rng.shuffle(options)
        q = f"Python 表达式 `{expr}` 的值是什么？" if zh else f"What is the value of the Python expression `{expr}`?"
        rows.append([q, *options, "ABCD"[options.index(value)]])
    return rows


def _csv(rows: list[list[str]], header: list[str] | None = None) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if header:
        writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def mmlu_subjects() -> dict[str, list[list[str]]]:
    rng = random.Random(SEED)
    return {
        "high_school_computer_science": _module_of(rng),
        "college_computer_science": _what_does(rng),
        "formal_logic": _bool_values(rng),
    }


def ceval_subjects() -> dict[str, list[list[str]]]:
    rng = random.Random(SEED + 1)
    return {"college_programming": _module_of(rng, zh=True), "logic": _bool_values(rng, zh=True)}


def boolq_docs() -> list[dict]:
    rng = random.Random(SEED + 2)
    modules = sorted({m for m, _, _ in FACTS})
    docs = []
    for module, name, description in FACTS:
        passage = f"The {module} module of the Python standard library provides {name}, which is used to {description}."
        truth = rng.random() < 0.5
        asked = module if truth else rng.choice([m for m in modules if m != module])
        docs.append({"question": f"is {name} provided by the {asked} module", "passage": passage, "answer": truth})
    return docs


def write_mmlu(out: Path) -> Path:
    with atomic_dir(out / "mmlu") as tmp:
        for subject, rows in mmlu_subjects().items():
            (tmp / "dev").mkdir(exist_ok=True)
            (tmp / "test").mkdir(exist_ok=True)
            (tmp / "dev" / f"{subject}_dev.csv").write_text(_csv(rows[:N_DEV]), encoding="utf-8")
            (tmp / "test" / f"{subject}_test.csv").write_text(_csv(rows[N_DEV:]), encoding="utf-8")
    return out / "mmlu"


def write_ceval(out: Path) -> Path:
    with atomic_dir(out / "ceval") as tmp:
        (tmp / "dev").mkdir()
        (tmp / "val").mkdir()
        for subject, rows in ceval_subjects().items():
            dev = [[i, *r, ""] for i, r in enumerate(rows[:N_DEV])]
            val = [[i, *r] for i, r in enumerate(rows[N_DEV:])]
            header = ["id", "question", "A", "B", "C", "D", "answer"]
            (tmp / "dev" / f"{subject}_dev.csv").write_text(_csv(dev, header + ["explanation"]), encoding="utf-8")
            (tmp / "val" / f"{subject}_val.csv").write_text(_csv(val, header), encoding="utf-8")
    return out / "ceval"


def write_boolq(out: Path) -> Path:
    docs = boolq_docs()
    with atomic_dir(out / "boolq") as tmp:
        lines = lambda ds: "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in ds)  # noqa: E731
        (tmp / "train.jsonl").write_text(lines(docs[:N_DEV]), encoding="utf-8")
        (tmp / "dev.jsonl").write_text(lines(docs[N_DEV:]), encoding="utf-8")
    return out / "boolq"


def write_sample_sets(out: Path | str) -> dict[str, Path]:
    """Write all three sets under ``out`` (normally the workspace's eval/); returns task -> directory."""
    out = Path(out)
    return {"mmlu": write_mmlu(out), "ceval": write_ceval(out), "boolq": write_boolq(out)}


def main(argv: list[str] | None = None) -> int:
    from llm.workspace import Workspace

    p = argparse.ArgumentParser(prog="python -m llm.eval.sample_sets", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="directory to write mmlu/, ceval/, boolq/ into (default: <workspace>/eval)")
    args = p.parse_args(argv)
    for task, path in write_sample_sets(args.out or Workspace.from_env().eval).items():
        print(f"{task}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
