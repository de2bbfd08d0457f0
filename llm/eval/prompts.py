"""Prompt text of each task: the standard MMLU evaluation's format (Hendrycks et al.), C-Eval's
own (its Chinese header and "答案："), and BoolQ as lm-evaluation-harness asks it.

    The following are multiple choice questions (with answers) about high school biology.

    <shot question>
    A. ..
    B. ..
    C. ..
    D. ..
    Answer: B

    <question>
    A. ..
    ...
    Answer:

Each choice is scored as the continuation " <label>" (" A".." D"; BoolQ " no" / " yes").
"""

from __future__ import annotations

from llm.eval.categories import ceval_name
from llm.eval.data import BOOLQ_LABELS, LETTERS, Example

TARGET_DELIMITER = " "
SHOT_DELIMITER = "\n\n"


def labels(task: str) -> tuple[str, ...]:
    return BOOLQ_LABELS if task == "boolq" else LETTERS


def header(task: str, subject: str) -> str:
    if task == "mmlu":
        return f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
    if task == "ceval":
        return f"以下是中国关于{ceval_name(subject)}考试的单项选择题，请选出其中的正确答案。\n\n"
    return ""


def question_text(task: str, ex: Example) -> str:
    """One question up to (not including) its answer."""
    if task == "boolq":
        return f"{ex.passage}\nQuestion: {ex.question}?\nAnswer:"
    options = "".join(f"\n{label}. {text}" for label, text in zip(LETTERS, ex.choices))
    return f"{ex.question.strip()}{options}\n{'答案：' if task == 'ceval' else 'Answer:'}"


def continuations(task: str) -> list[str]:
    return [TARGET_DELIMITER + label for label in labels(task)]


def shared_start(task: str, subject: str, shots: list[Example]) -> str:
    """What every prompt of a subject starts with: the header and the solved shots."""
    return header(task, subject) + "".join(
        question_text(task, s) + TARGET_DELIMITER + labels(task)[s.answer] + SHOT_DELIMITER for s in shots
    )


def prompt(task: str, ex: Example, shots: list[Example]) -> str:
    """Header, the solved shots, then the question, ending right before the answer."""
    return shared_start(task, ex.subject, shots) + question_text(task, ex)
