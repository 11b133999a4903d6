"""Tests for lab_utils.word_problems: the problems' answers and worked solutions agree (every step's arithmetic is
right, the solution ends with the answer), and extract_answer follows its rule on generated-looking texts."""

import pytest

from lab_utils.word_problems import EXEMPLARS, WordProblem, arithmetic_steps, extract_answer, word_problems


def test_thirty_problems_ten_kinds_interleaved():
    problems = word_problems()
    assert len(problems) == 30 and len({p.question for p in problems}) == 30
    kinds = [p.kind for p in problems]
    assert len(set(kinds[:10])) == 10 and kinds[:10] == kinds[10:20] == kinds[20:]


@pytest.mark.parametrize("problem", [*word_problems(), *EXEMPLARS], ids=lambda p: p.question[:30])
def test_worked_solution_is_right(problem: WordProblem):
    assert isinstance(problem.answer, int) and problem.answer > 0
    assert problem.reasoning.endswith(f"The answer is {problem.answer}.")
    assert extract_answer(problem.reasoning) == problem.answer
    steps = arithmetic_steps(problem.reasoning)
    assert steps and all(ok for _, ok in steps), steps  # every "a op b = c" in the solution holds


def test_exemplars_are_not_test_problems():
    assert not {e.question for e in EXEMPLARS} & {p.question for p in word_problems()}
    assert EXEMPLARS[0].answer == 11  # the lecture's tennis balls


@pytest.mark.parametrize(("text", "want"), [
    (" The answer is 11.", 11),
    (" 5 + 6 = 11. The answer is 11.", 11),
    (" The answer is 9.\n\nQ: A shop has 40 apples.", 9),
    (" The answer is 9. Q: Tom has 4 cats.", 9),
    (" 1,200 tickets", 1200),
    (" 3,4 and 5", 5),
    (" 2.5 apples each.", 2.5),
    (" -4 degrees", -4),
    (" no idea", None),
    ("\n\nQ: 12 cows", None),
    ("", None),
])
def test_extract_answer(text, want):
    got = extract_answer(text)
    assert got == want and type(got) is type(want)


def test_extract_answer_bad_input():
    with pytest.raises(TypeError, match="str"):
        extract_answer(11)


def test_arithmetic_steps_marks_wrong_steps():
    assert arithmetic_steps("4 + 5 + 2 = 9. 3 * 4 = 12, 12 / 3 = 4 and 7 - 2 = 6; 2 + 3 x 4 = 14") == [
        ("4 + 5 + 2 = 9", False), ("3 * 4 = 12", True), ("12 / 3 = 4", True), ("7 - 2 = 6", False),
        ("2 + 3 x 4 = 14", True)]
    assert arithmetic_steps("no steps here") == []
