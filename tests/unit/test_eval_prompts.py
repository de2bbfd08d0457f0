"""The prompt text of each task (few-shot included) and the log-likelihood scorer's bookkeeping."""

from __future__ import annotations

from llm.eval import prompts, scoring
from llm.eval.data import Example


def mc(subject, question, choices, answer):
    return Example(subject, question, tuple(choices), answer, "f.csv:1")


def test_mmlu_few_shot_prompt_is_the_standard_format():
    shots = [
        mc("high_school_biology", "What carries oxygen?", ["DNA", "Haemoglobin", "Bile", "Keratin"], 1),
        mc("high_school_biology", "Cells divide by?", ["mitosis", "osmosis", "diffusion", "fusion"], 0),
    ]
    q = mc("high_school_biology", "  Which organ filters blood?  ", ["Kidney", "Lung", "Skin", "Eye"], 0)
    expected = (
        "The following are multiple choice questions (with answers) about high school biology.\n\n"
        "What carries oxygen?\nA. DNA\nB. Haemoglobin\nC. Bile\nD. Keratin\nAnswer: B\n\n"
        "Cells divide by?\nA. mitosis\nB. osmosis\nC. diffusion\nD. fusion\nAnswer: A\n\n"
        "Which organ filters blood?\nA. Kidney\nB. Lung\nC. Skin\nD. Eye\nAnswer:"
    )
    assert prompts.prompt("mmlu", q, shots) == expected
    assert prompts.continuations("mmlu") == [" A", " B", " C", " D"]


def test_mmlu_zero_shot_prompt():
    q = mc("anatomy", "Q?", ["a", "b", "c", "d"], 2)
    assert prompts.prompt("mmlu", q, []) == (
        "The following are multiple choice questions (with answers) about anatomy.\n\nQ?\nA. a\nB. b\nC. c\nD. d\nAnswer:"  # noqa: E501
    )


def test_ceval_prompt_uses_the_chinese_subject_name():
    # lm-eval 0.4.13's ceval/ceval-valid_logic.yaml: no "考试" after the subject name
    shot = mc("logic", "甲？", ["1", "2", "3", "4"], 3)
    q = mc("logic", "乙？", ["5", "6", "7", "8"], 0)
    assert prompts.prompt("ceval", q, [shot]) == (
        "以下是中国关于逻辑学的单项选择题，请选出其中的正确答案。\n\n"
        "甲？\nA. 1\nB. 2\nC. 3\nD. 4\n答案： D\n\n"
        "乙？\nA. 5\nB. 6\nC. 7\nD. 8\n答案："
    )


def test_boolq_prompt_and_choices():
    shot = Example("boolq", "is water wet", (), 1, "t.jsonl:1", passage="Water is wet.")
    q = Example("boolq", "is fire cold", (), 0, "d.jsonl:1", passage="Fire is hot.")
    assert prompts.prompt("boolq", q, [shot]) == (
        "Water is wet.\nQuestion: is water wet?\nAnswer: yes\n\nFire is hot.\nQuestion: is fire cold?\nAnswer:"
    )
    assert prompts.continuations("boolq") == [" no", " yes"]


def char_tokenize(text: str) -> list[int]:
    return [ord(c) for c in text]


def pair_tokenize(text: str) -> list[int]:
    """A tokenizer that merges ' A' into one token but spells 'yes' by letters."""
    out, i = [], 0
    while i < len(text):
        if text[i] == " " and i + 1 < len(text) and text[i + 1] in "ABCD":
            out.append(1000 + ord(text[i + 1]))
            i += 2
        else:
            out.append(ord(text[i]))
            i += 1
    return out


def test_encode_splits_like_lm_evaluation_harness():
    req = scoring.encode(pair_tokenize, "Answer:", [" A", " B"])
    assert req.context == tuple(map(ord, "Answer:"))
    assert req.choices == ((1065,), (1066,))
    # a trailing space moves from the context to the continuation
    req = scoring.encode(pair_tokenize, "Answer: ", ["A"])
    assert req.context == tuple(map(ord, "Answer:")) and req.choices == ((1065,),)


class FakeEngine:
    """log P(next = t | prefix) = -(t + len(prefix)) / 100, plus a record of every call."""

    max_length = 8

    def __init__(self):
        self.prompts: list[tuple[int, ...]] = []
        self.batches: list[int] = []

    def score_next_token(self, prompts, candidates):
        self.batches.append(len(prompts))
        self.prompts += [tuple(p) for p in prompts]
        return [[-(t + len(p)) / 100 for t in c] for p, c in zip(prompts, candidates)]


def test_one_forward_per_question_when_answers_are_single_tokens():
    engine = FakeEngine()
    reqs = [
        scoring.Request((1, 2, 3), ((10,), (11,), (12,), (13,))),
        scoring.Request((4, 5), ((10,), (11,), (12,), (13,))),
    ]
    scored = scoring.score(engine, reqs, batch_size=8)
    assert scored.forwards == 2 and engine.prompts == [(1, 2, 3), (4, 5)]  # longest first
    assert scored.choice_logprobs[1] == [-0.12, -0.13, -0.14, -0.15]
    assert [scoring.argmax(lp) for lp in scored.choice_logprobs] == [0, 0]


def test_multi_token_answers_sum_over_their_tokens_and_batches_are_bounded():
    engine = FakeEngine()
    reqs = [
        scoring.Request((1,), ((5, 6), (7,))),
        scoring.Request((2,), ((5, 6), (7,))),
        scoring.Request((3,), ((9,),)),
    ]
    scored = scoring.score(engine, reqs, batch_size=2)
    # prefixes: (1,), (1, 5), (2,), (2, 5), (3,): each run once
    assert sorted(engine.prompts) == [(1,), (1, 5), (2,), (2, 5), (3,)]
    assert engine.batches == [2, 2, 1]
    assert scored.choice_logprobs[0] == [-(5 + 1) / 100 - (6 + 2) / 100, -(7 + 1) / 100]


def test_long_prompts_are_left_truncated_and_counted():
    engine = FakeEngine()
    scored = scoring.score(engine, [scoring.Request(tuple(range(20)), ((1,), (2,)))], batch_size=4)
    assert engine.prompts == [tuple(range(12, 20))] and scored.truncated == 1


def test_argmax_takes_the_first_of_equal_scores():
    assert scoring.argmax([-1.0, -0.5, -0.5, -2.0]) == 1


def test_shared_start_is_header_and_shots():
    shot = mc("anatomy", "S?", ["a", "b", "c", "d"], 1)
    q = mc("anatomy", "Q?", ["a", "b", "c", "d"], 0)
    start = prompts.shared_start("mmlu", "anatomy", [shot])
    assert prompts.prompt("mmlu", q, [shot]) == start + "Q?\nA. a\nB. b\nC. c\nD. d\nAnswer:"
    assert start.endswith("Answer: B\n\n")


def test_encode_marks_the_shared_start_only_where_tokens_split_there():
    req = scoring.encode(char_tokenize, "HEAD\n\nQ?", [" A"], shared_text="HEAD\n\n")
    assert req.shared == 6
    # a tokenizer that merges across the boundary: nothing is shared
    merge = lambda t: [ord(c) for c in t.replace("\n\nQ", "#")]  # noqa: E731
    assert scoring.encode(merge, "HEAD\n\nQ?", [" A"], shared_text="HEAD\n\n").shared == 0


class FakeSharedEngine(FakeEngine):
    def __init__(self):
        super().__init__()
        self.shared_calls: list[tuple[tuple[int, ...], list[tuple[int, ...]]]] = []

    def score_rows(self, shared, rows, reads):
        if shared:
            self.shared_calls.append((tuple(shared), [tuple(r) for r in rows]))
        full = [tuple(shared) + tuple(r) for r in rows]
        return [
            [self.score_next_token([f[: len(shared) + pos + 1]], [c])[0] for pos, c in rr] for f, rr in zip(full, reads)
        ]


def test_shared_prefix_runs_once_per_group_and_gives_the_same_scores():
    reqs = [
        scoring.Request((7, 7, 1), ((10,), (11,)), shared=2),
        scoring.Request((7, 7, 2, 3), ((10,), (11,)), shared=2),
        scoring.Request(tuple(range(9)), ((10,), (11,)), shared=2),  # longer than the window: runs whole
    ]
    plain = scoring.score(FakeEngine(), reqs, batch_size=4)
    engine = FakeSharedEngine()
    shared = scoring.score(engine, reqs, batch_size=4)
    assert engine.shared_calls == [((7, 7), [(2, 3), (1,)])]
    assert shared.choice_logprobs[:2] == plain.choice_logprobs[:2]
    assert shared.truncated == 1 and shared.forwards == 4  # 3 prompts + 1 shared prefix


def test_one_row_per_question_serves_answers_of_several_tokens():
    """ " y"+"es" beside " no": the row prompt + " y" gives both first tokens and "es"; results equal
    the one-prefix-per-row scoring."""
    reqs = [scoring.Request((1, 2), ((5, 6), (7,))), scoring.Request((3,), ((5, 6, 8), (5, 9), (4,)))]
    plain = scoring.score(FakeEngine(), reqs, batch_size=8)
    engine = FakeSharedEngine()
    rows = scoring.score(engine, reqs, batch_size=8)
    assert rows.choice_logprobs == plain.choice_logprobs
    # (1, 2, 5) reads after (1, 2) and after (1, 2, 5); (3, 5, 6) covers (3,), (3, 5), (3, 5, 6); (3, 5) is covered
    assert rows.forwards == 2 and plain.forwards == 5
    assert sorted(engine.prompts) == [(1, 2), (1, 2, 5), (3,), (3, 5), (3, 5, 6)]  # each read once
