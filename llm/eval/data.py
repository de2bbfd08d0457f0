"""Read evaluation sets in the layouts MindSpeed-LLM reads, counting every row it cannot use.

    MMLU    <dir>/test/{subject}_test.csv (or <dir>/{subject}_test.csv), headerless:
            question,A,B,C,D,answer; few-shot examples from <dir>/dev/{subject}_dev.csv
    C-Eval  <dir>/val/{subject}_val.csv (or <dir>/{subject}_val.csv), with a header naming
            (id,)question,A,B,C,D,answer(,explanation); few-shot from <dir>/dev/{subject}_dev.csv
    BoolQ   <dir>/dev.jsonl, one {"question", "passage", "answer": true|false} per line;
            few-shot examples from <dir>/train.jsonl

A row that cannot be used is skipped and counted under a reason (``Problems``); a missing data
directory or a file without the expected header is a user error (one sentence).
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from llm.errors import NpuboxError

TASKS = ("mmlu", "ceval", "boolq")
LETTERS = ("A", "B", "C", "D")
BOOLQ_LABELS = ("no", "yes")  # answer False -> index 0, True -> index 1

MALFORMED = "malformed row"
BAD_ANSWER = "answer outside the choices"
NO_DEV = "missing dev file for few-shot (subject skipped)"
FEW_DEV = "dev file has fewer usable rows than --shots (fewer shots used)"

EMPTY_SUBJECT = "subject file without a usable question (subject skipped)"

CEVAL_COLUMNS = ("question", "A", "B", "C", "D", "answer")
MAX_RECORD_LINES = 100  # the most lines one quoted question may span


@dataclass(frozen=True)
class Example:
    subject: str
    question: str
    choices: tuple[str, ...]  # MMLU / C-Eval: the four option texts; BoolQ: empty
    answer: int  # index into the task's labels (LETTERS or BOOLQ_LABELS)
    where: str  # "file:line", for reports
    passage: str = ""  # BoolQ only


@dataclass
class Problems:
    """Rows or subjects that were not evaluated as asked, by reason: reason -> ["file:line", ...]."""

    by_reason: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def add(self, reason: str, where: str, count: int = 1) -> None:
        self.by_reason[reason].extend([where] * count)

    def counts(self) -> dict[str, int]:
        return {reason: len(places) for reason, places in sorted(self.by_reason.items())}


@dataclass
class EvalSet:
    task: str
    test: dict[str, list[Example]]  # subject -> questions to score, subjects sorted
    shots: dict[str, list[Example]]  # subject -> few-shot examples (first --shots rows of dev)
    files: list[Path]  # every file read, for checksums
    problems: Problems

    @property
    def num_questions(self) -> int:
        return sum(map(len, self.test.values()))


def _first_dir(*candidates: Path) -> Path | None:
    return next((c for c in candidates if c.is_dir()), None)


def _subject_files(split_dir: Path, suffix: str) -> dict[str, Path]:
    return {p.name[: -len(suffix)]: p for p in sorted(split_dir.glob(f"*{suffix}")) if p.is_file()}


def _select(available: dict[str, Path], subjects: list[str] | None, where: Path, suffix: str) -> dict[str, Path]:
    if not available:
        raise NpuboxError(f"{where}: holds no *{suffix} files; expected one {{subject}}{suffix} per subject")
    if not subjects:
        return available
    unknown = [s for s in subjects if s not in available]
    if unknown:
        raise NpuboxError(f"--subjects {','.join(unknown)}: not found in {where}; available: {', '.join(available)}")
    return {s: available[s] for s in subjects}


def _row_problem(fields: list[str]) -> str | None:
    """Why question, A, B, C, D, answer cannot be used (MALFORMED or BAD_ANSWER), or None."""
    if len(fields) != 6 or not fields[0].strip() or any(not c.strip() for c in fields[1:5]):
        return MALFORMED
    if fields[5].strip() not in LETTERS:
        return BAD_ANSWER
    return None


def _choice_row(subject: str, row: list[str], where: str, problems: Problems) -> Example | None:
    """question, A, B, C, D, answer -> Example (or None, counted)."""
    problem = _row_problem(row)
    if problem:
        problems.add(problem, where)
        return None
    return Example(subject, row[0], tuple(row[1:5]), LETTERS.index(row[5].strip()), where)


def _usable(row: list[str], index: list[int], width: int) -> bool:
    return len(row) == width and _row_problem([row[i] for i in index]) is None


def _parse_line(line: str) -> list[str]:
    try:
        return next(csv.reader([line]), [])
    except csv.Error:
        return []


def _row_alone(line: str, index: list[int], width: int) -> bool:
    """A line that is a usable row by itself: balanced quotes (the last line of a quoted field that spans
    lines closes a quote: it has an odd number of them)."""
    return line.count('"') % 2 == 0 and _usable(_parse_line(line), index, width)


def _rows(lines: list[str], index: list[int], width: int) -> Iterator[tuple[int, list[str] | None]]:
    """(line where the record starts, its fields, or None for a malformed record).

    A quoted field may span lines (a question with code in it), but a record that spans lines is kept
    only when it is a usable row and none of the lines it would swallow is a usable row on its own.
    Otherwise its first line is malformed and reading resumes on the next line: one stray quote costs
    one row, never the rows after it."""
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        reader = csv.reader(lines[i : i + MAX_RECORD_LINES])
        try:
            row = next(reader)
        except csv.Error:  # e.g. a NUL byte
            row = []
        span = reader.line_num
        swallowed = lines[i + 1 : i + span]
        if span > 1 and (not _usable(row, index, width) or any(_row_alone(line, index, width) for line in swallowed)):
            yield i + 1, None
            i += 1
            continue
        yield i + 1, row
        i += span


def _lines(path: Path) -> list[str]:
    """The file's lines, UTF-8 with or without a BOM (a BOM is not part of the first row)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return f.readlines()
    except UnicodeDecodeError as e:
        raise NpuboxError(
            f"{path}: not UTF-8 (byte {e.start} is 0x{e.object[e.start]:02x}); the benchmark files are UTF-8: "
            f"convert it, e.g. `iconv -f GBK -t UTF-8 {path.name} > fixed && mv fixed {path.name}`"
        ) from None


def _read_choice_rows(
    path: Path, lines: list[str], index: list[int], width: int, offset: int, subject: str, problems: Problems
) -> list[Example]:
    """The rows of ``lines`` (``width`` fields; question, A, B, C, D, answer at ``index``), which start on
    line ``offset`` + 1 of ``path``, as Examples; the rest counted."""
    out = []
    for line, row in _rows(lines, index, width):
        where = f"{path}:{offset + line}"
        if row is None or len(row) != width:
            problems.add(MALFORMED, where)
            continue
        example = _choice_row(subject, [row[i] for i in index], where, problems)
        if example:
            out.append(example)
    return out


def _read_headerless(path: Path, subject: str, problems: Problems) -> list[Example]:
    return _read_choice_rows(path, _lines(path), list(range(6)), 6, 0, subject, problems)


def _read_with_header(path: Path, subject: str, problems: Problems) -> list[Example]:
    lines = _lines(path)
    first = next((i for i, line in enumerate(lines) if line.strip()), len(lines))
    header = _parse_line(lines[first]) if first < len(lines) else []
    missing = [c for c in CEVAL_COLUMNS if c not in header]
    if missing:
        raise NpuboxError(
            f"{path}: header {','.join(header) or '(empty)'} lacks {','.join(missing)}; "
            f"expected C-Eval's header with columns {','.join(CEVAL_COLUMNS)} (id and explanation optional)"
        )
    index = [header.index(c) for c in CEVAL_COLUMNS]
    return _read_choice_rows(path, lines[first + 1 :], index, len(header), first + 1, subject, problems)


def _take_shots(dev: list[Example], shots: int, path: Path, problems: Problems) -> list[Example]:
    if len(dev) < shots:
        problems.add(FEW_DEV, str(path))
    return dev[:shots]


def _load_choice_task(task: str, data_path: Path, split: str, read, shots: int, subjects: list[str] | None) -> EvalSet:
    split_dir = _first_dir(data_path / split, data_path)
    dev_dir = _first_dir(data_path / "dev", split_dir.parent / "dev")
    problems = Problems()
    files = _select(_subject_files(split_dir, f"_{split}.csv"), subjects, split_dir, f"_{split}.csv")
    test, shot_sets, read_files = {}, {}, []
    for subject, path in files.items():
        questions = read(path, subject, problems)
        read_files.append(path)
        if not questions:
            problems.add(EMPTY_SUBJECT, str(path))
            continue
        if shots:
            dev_path = (dev_dir or data_path / "dev") / f"{subject}_dev.csv"
            if not dev_path.is_file():
                problems.add(NO_DEV, str(dev_path), count=len(questions))
                continue
            read_files.append(dev_path)
            shot_sets[subject] = _take_shots(read(dev_path, subject, problems), shots, dev_path, problems)
        else:
            shot_sets[subject] = []
        test[subject] = questions
    return EvalSet(task, test, shot_sets, read_files, problems)


def _read_boolq(path: Path, problems: Problems) -> list[Example]:
    out = []
    for line_no, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            problems.add(MALFORMED, where)
            continue
        if not isinstance(doc, dict) or not all(
            isinstance(doc.get(k), str) and doc[k].strip() for k in ("question", "passage")
        ):
            problems.add(MALFORMED, where)
            continue
        if not isinstance(doc.get("answer"), bool):
            problems.add(BAD_ANSWER, where)
            continue
        out.append(Example("boolq", doc["question"], (), int(doc["answer"]), where, passage=doc["passage"]))
    return out


def _load_boolq(data_path: Path, shots: int, subjects: list[str] | None) -> EvalSet:
    dev = data_path if data_path.is_file() else data_path / "dev.jsonl"
    if not dev.is_file():
        raise NpuboxError(f"{dev}: not found; expected BoolQ's dev.jsonl (question, passage, answer) in --data-path")
    if subjects and subjects != ["boolq"]:
        raise NpuboxError(f"--subjects {','.join(subjects)}: BoolQ has one subject, 'boolq'")
    problems = Problems()
    files = [dev]
    test = {"boolq": _read_boolq(dev, problems)}
    shot_sets: dict[str, list[Example]] = {"boolq": []}
    if shots:
        train = dev.parent / "train.jsonl"
        if not train.is_file():
            problems.add(NO_DEV, str(train), count=len(test["boolq"]))
            test = {}
        else:
            files.append(train)
            shot_sets["boolq"] = _take_shots(_read_boolq(train, problems), shots, train, problems)
    return EvalSet("boolq", test, shot_sets, files, problems)


def load_eval_set(task: str, data_path: Path | str, shots: int, subjects: list[str] | None = None) -> EvalSet:
    """Read ``task``'s files under ``data_path``; ``shots`` examples per subject from its dev file."""
    if task not in TASKS:
        raise NpuboxError(f"--task {task!r} is not a known task; expected one of {', '.join(TASKS)}")
    data_path = Path(data_path)
    if not data_path.exists():
        raise NpuboxError(f"--data-path {data_path}: not found; expected the {task} data directory")
    if shots < 0:
        raise NpuboxError(f"--shots {shots}: expected 0 or more")
    if task == "boolq":
        return _load_boolq(data_path, shots, subjects)
    if not data_path.is_dir():
        raise NpuboxError(f"--data-path {data_path}: is not a directory; expected the {task} data directory")
    if task == "mmlu":
        return _load_choice_task(task, data_path, "test", _read_headerless, shots, subjects)
    return _load_choice_task(task, data_path, "val", _read_with_header, shots, subjects)
