"""Accuracy per subject, per category and overall; the table on screen and the JSON on disk."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm.atomic import write_text_atomic
from llm.digest import sha256_file
from llm.eval.categories import ceval_category, mmlu_category
from llm.eval.data import EvalSet


@dataclass(frozen=True)
class Tally:
    correct: int
    total: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"correct": self.correct, "total": self.total, "accuracy": self.accuracy}


def category(task: str, subject: str) -> str:
    if task == "mmlu":
        return mmlu_category(subject)
    if task == "ceval":
        return ceval_category(subject)
    return "boolq"


def tally(task: str, eval_set: EvalSet, predictions: dict[str, list[int]]) -> dict[str, Any]:
    """{"subjects": {s: Tally}, "categories": {c: Tally}, "overall": Tally}."""
    subjects: dict[str, Tally] = {}
    per_category: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for subject, questions in eval_set.test.items():
        correct = sum(p == q.answer for p, q in zip(predictions[subject], questions))
        subjects[subject] = Tally(correct, len(questions))
        c = per_category[category(task, subject)]
        c[0] += correct
        c[1] += len(questions)
    overall = Tally(sum(t.correct for t in subjects.values()), sum(t.total for t in subjects.values()))
    return {
        "subjects": subjects,
        "categories": {name: Tally(*ct) for name, ct in sorted(per_category.items())},
        "overall": overall,
    }


def checksums(files: list[Path], root: Path) -> dict[str, str]:
    """sha256 of each data file, keyed by its path relative to the data directory."""
    out = {}
    for path in files:
        try:
            key = str(path.relative_to(root))
        except ValueError:
            key = str(path)
        out[key] = sha256_file(path)
    return out


def to_json(
    task: str,
    eval_set: EvalSet,
    predictions: dict[str, list[int]],
    scores: dict[str, list[list[float]]],
    tallies: dict[str, Any],
    *,
    model: str | None,
    checkpoint: dict[str, Any],
    data_path: Path,
    settings: dict[str, Any],
    timing: dict[str, Any],
) -> dict[str, Any]:
    return {
        "task": task,
        "model": model,
        "checkpoint": checkpoint,
        "data": {"path": str(data_path), "sha256": checksums(eval_set.files, data_path)},
        "settings": settings,
        "accuracy": tallies["overall"].accuracy,
        "overall": tallies["overall"].as_dict(),
        "categories": {k: v.as_dict() for k, v in tallies["categories"].items()},
        "subjects": {k: v.as_dict() for k, v in tallies["subjects"].items()},
        "skipped": eval_set.problems.counts(),
        "skipped_where": {k: v[:20] for k, v in sorted(eval_set.problems.by_reason.items())},
        "timing": timing,
        "predictions": [
            {"subject": s, "where": q.where, "answer": q.answer, "prediction": p, "logprobs": lp}
            for s, questions in eval_set.test.items()
            for q, p, lp in zip(questions, predictions[s], scores[s])
        ],
    }


def write_json(path: Path, result: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(result, indent=1, ensure_ascii=False) + "\n")


def print_table(task: str, tallies: dict[str, Any], problems: dict[str, int], console=None) -> None:
    from rich.console import Console
    from rich.text import Text

    from llm.tables import SECTION, Column, print_table

    console = console or Console()
    rows = [
        (subject, category(task, subject), str(t.total), str(t.correct), f"{100 * t.accuracy:.1f}%")
        for subject, t in tallies["subjects"].items()
    ]
    if len(tallies["categories"]) > 1 or task != "boolq":
        rows.append(SECTION)
        for name, t in tallies["categories"].items():
            rows.append((Text(name, style="bold"), "", str(t.total), str(t.correct), f"{100 * t.accuracy:.1f}%"))
    t = tallies["overall"]
    bold = Text(f"{100 * t.accuracy:.1f}%", style="bold")
    rows += [SECTION, (Text("overall", style="bold"), "", str(t.total), str(t.correct), bold)]
    right = [Column(h, "right") for h in ("questions", "correct", "accuracy")]
    print_table(["subject", "category", *right], rows, title=f"{task} accuracy", console=console)
    for reason, count in problems.items():
        console.print(f"[yellow]skipped[/] {count}: {reason}", soft_wrap=True)
