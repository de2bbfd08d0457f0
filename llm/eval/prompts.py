"""Prompt text of each task, as lm-evaluation-harness's built-in tasks ask it: MMLU in the
standard format (Hendrycks et al.; lm-eval's mmlu/default), C-Eval as lm-eval's ``ceval-valid``
(its Chinese header and "答案："), BoolQ as lm-eval's super_glue/boolq.

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

C-Eval has a second style, ``mindspeed-llm``: the prompt of MindSpeed-LLM's default C-Eval
evaluation, the same from ModelLink 1.0.RC1 to MindSpeed-LLM 26.0.0 (2.0.0:
mindspeed_llm/tasks/evaluation/eval_impl/ceval_exam.py with fewshot_template/ceval_5shot_template.json):
"请从下列选择题中选择正确的选项。", each question as "问：...\nA. ..\n答：", the answer letter right
after "答：" (no space). MindSpeed-LLM takes the shots from its fixed template file; we take them from
the dev file, and scores the letters' log-likelihoods as for every task (MindSpeed-LLM generates one
token). (Its ``--prompt-type`` path, "以下是中国关于{subject}考试的单项选择题...", wraps the
prompt in a chat template and samples the shots at random; it is not reproduced.)
"""

from __future__ import annotations

from llm.errors import NpuboxError
from llm.eval.categories import ceval_name
from llm.eval.data import BOOLQ_LABELS, LETTERS, Example

TARGET_DELIMITER = " "
SHOT_DELIMITER = "\n\n"
CEVAL_STYLES = ("lm-eval", "mindspeed-llm")


def _mindspeed(task: str, style: str) -> bool:
    if style not in CEVAL_STYLES:
        raise NpuboxError(f"C-Eval prompt style {style!r} is not known; expected one of {', '.join(CEVAL_STYLES)}")
    return task == "ceval" and style == "mindspeed-llm"


def target_delimiter(task: str, style: str = "lm-eval") -> str:
    """What separates a question from its answer label."""
    return "" if _mindspeed(task, style) else TARGET_DELIMITER


def labels(task: str) -> tuple[str, ...]:
    return BOOLQ_LABELS if task == "boolq" else LETTERS


def header(task: str, subject: str, style: str = "lm-eval") -> str:
    if task == "mmlu":
        return f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
    if _mindspeed(task, style):
        return "请从下列选择题中选择正确的选项。\n\n"
    if task == "ceval":
        return f"以下是中国关于{ceval_name(subject)}的单项选择题，请选出其中的正确答案。\n\n"
    return ""


def question_text(task: str, ex: Example, style: str = "lm-eval") -> str:
    """One question up to (not including) its answer."""
    if task == "boolq":
        return f"{ex.passage}\nQuestion: {ex.question}?\nAnswer:"
    options = "".join(f"\n{label}. {text}" for label, text in zip(LETTERS, ex.choices))
    if _mindspeed(task, style):
        return f"问：{ex.question}{options}\n答："
    return f"{ex.question.strip()}{options}\n{'答案：' if task == 'ceval' else 'Answer:'}"


def continuations(task: str, style: str = "lm-eval") -> list[str]:
    return [target_delimiter(task, style) + label for label in labels(task)]


def shared_start(task: str, subject: str, shots: list[Example], style: str = "lm-eval") -> str:
    """What every prompt of a subject starts with: the header and the solved shots."""
    delimiter = target_delimiter(task, style)
    return header(task, subject, style) + "".join(
        question_text(task, s, style) + delimiter + labels(task)[s.answer] + SHOT_DELIMITER for s in shots
    )


def prompt(task: str, ex: Example, shots: list[Example], style: str = "lm-eval") -> str:
    """Header, the solved shots, then the question, ending right before the answer."""
    return shared_start(task, ex.subject, shots, style) + question_text(task, ex, style)
