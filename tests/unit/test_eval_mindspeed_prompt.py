"""`--ceval-prompt mindspeed-llm` builds exactly the text of MindSpeed-LLM's default C-Eval evaluation
(2.0.0, mindspeed_llm/tasks/evaluation/eval_impl/ceval_exam.py and fewshot_template/ceval_5shot_template.json,
read from the pinned source archive): given that template's own five shots as the dev rows, our
shared start is the template, and a question's prompt is what ceval_exam.py formats."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import tarfile

import pytest

from _example_scripts import source_archive
from _mindspeed_fixtures import V200
from llm.eval import prompts
from llm.eval.data import LETTERS, Example

ARCHIVE = source_archive("MindSpeed-LLM", V200)  # v2.0.0
EVAL_IMPL = "mindspeed_llm/tasks/evaluation/eval_impl/"
SHOT = re.compile(r"(.*)\nA\. (.*)\nB\. (.*)\nC\. (.*)\nD\. (.*)\n答：([ABCD])", re.DOTALL)


@pytest.fixture(scope="module")
def mindspeed():
    if not ARCHIVE.is_file():
        pytest.skip(f"{ARCHIVE}: the pinned MindSpeed-LLM 2.0.0 source archive is not there")
    files = {}
    with tarfile.open(ARCHIVE) as tar:
        for member in tar:
            for name in ("ceval_exam.py", "fewshot_template/ceval_5shot_template.json"):
                if member.name.endswith(EVAL_IMPL + name):
                    files[name] = tar.extractfile(member).read().decode("utf-8")
    source = files["ceval_exam.py"]
    instruction = ast.literal_eval(re.search(r'instruction_template=("[^"]*")', source).group(1))
    question = re.search(r'test_question = f("[^"]*")', source).group(1)
    question = ast.literal_eval(re.sub(r"row\['(\w+)'\]", r"\1", question))
    return json.loads(files["fewshot_template/ceval_5shot_template.json"]), instruction, question


def test_mindspeed_llm_style_is_mindspeed_llm_default_prompt(mindspeed):
    templates, instruction, question = mindspeed
    assert instruction == "{fewshot_template}\n\n问：{question}\n答："
    assert len(templates) == 52
    target = Example("logic", "甲？", ("1", "2", "3", "4"), 0, "val.csv:2")
    for subject, template in templates.items():
        header, body = template.split("\n\n", 1)
        shots = []
        for block in body.removeprefix("问：").split("\n\n问："):
            m = SHOT.fullmatch(block)
            assert m, (subject, block)
            shots.append(Example(subject, m[1], m.group(2, 3, 4, 5), LETTERS.index(m[6]), "dev.csv"))
        assert len(shots) == 5
        assert prompts.shared_start("ceval", subject, shots, style="mindspeed-llm") == template + "\n\n"
        q = dataclasses.replace(target, subject=subject)
        expected = instruction.format(
            fewshot_template=template,
            question=question.format(
                question=q.question, A=q.choices[0], B=q.choices[1], C=q.choices[2], D=q.choices[3]
            ),
        )
        assert prompts.prompt("ceval", q, shots, style="mindspeed-llm") == expected
    # the answer is generated right after "答：", as the shots show it: no space
    assert prompts.continuations("ceval", style="mindspeed-llm") == ["A", "B", "C", "D"]
    assert prompts.continuations("ceval") == [" A", " B", " C", " D"]


def test_an_unknown_prompt_style_is_one_sentence():
    from llm.errors import NpuboxError

    with pytest.raises(
        NpuboxError, match="C-Eval prompt style 'mindspeed' is not known; expected one of lm-eval, mindspeed-llm"
    ):
        prompts.continuations("ceval", style="mindspeed")


def test_cli_asks_ceval_in_the_chosen_style(tmp_path):
    """`--ceval-prompt mindspeed-llm` changes what is scored (and says so in the results); the default is lm-eval's."""
    pytest.importorskip("transformers")
    from _eval_tiny_model import build_tiny_hf
    from llm.__main__ import main as llm_main
    from llm.eval import sample_sets

    hf = build_tiny_hf(tmp_path / "hf")
    data = sample_sets.write_sample_sets(tmp_path / "eval")["ceval"]
    results = {}
    for style in (None, "mindspeed-llm"):
        out = tmp_path / f"{style}.json"
        flag = ["--ceval-prompt", style] if style else []
        assert (
            llm_main(
                [
                    "eval",
                    "--task",
                    "ceval",
                    "--data-path",
                    str(data),
                    "--hf-dir",
                    str(hf),
                    "--shots",
                    "2",
                    *flag,
                    "--output",
                    str(out),
                    "--quiet",
                ]
            )
            == 0
        )
        results[style] = json.loads(out.read_text())
    assert results[None]["settings"]["prompt"] == "lm-eval"
    assert results["mindspeed-llm"]["settings"]["prompt"] == "mindspeed-llm"
    default, mindspeed = (r["predictions"][0]["logprobs"] for r in results.values())
    assert max(abs(a - b) for a, b in zip(default, mindspeed)) > 1e-3
