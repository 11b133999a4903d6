"""Short arithmetic word problems for chain-of-thought prompting, their worked solutions, and reading answers back.

Wei et al. 2022 prompt a model with solved examples whose answers spell out the reasoning ("chain of thought")
before "The answer is N."; standard prompting shows only "The answer is N.". No data set ships with the course, so
this module writes its own problems: each template is a small story with one or two steps, filled with a few number
sets, and its answer and worked solution are computed from the numbers (never typed). :func:`extract_answer` reads
a model's answer by one rule: the last number before the model starts a new question. Chapter "Adapting without
training" (chain_of_thought.ipynb). Needs only the standard library.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["EXEMPLARS", "WordProblem", "arithmetic_steps", "extract_answer", "word_problems"]


@dataclass(frozen=True)
class WordProblem:
    """One problem.

    Attributes:
        question: the story and its question.
        answer: the right answer, computed from the numbers.
        reasoning: a worked solution that ends with ``"The answer is {answer}."``.
        kind: the template's name (e.g. ``"add_multiply"``).
    """

    question: str
    answer: int
    reasoning: str
    kind: str


def _add_multiply(a: int, b: int, c: int) -> WordProblem:
    ans = a + b * c
    return WordProblem(
        f"Maya has {a} marbles. She buys {b} bags with {c} marbles in each bag. How many marbles does she have now?",
        ans, f"Maya started with {a} marbles. {b} bags of {c} marbles is {b} * {c} = {b * c} marbles. "
        f"{a} + {b * c} = {ans}. The answer is {ans}.", "add_multiply")


def _sell_bake(a: int, b: int, c: int) -> WordProblem:
    ans = a - b + c
    return WordProblem(
        f"A bakery had {a} loaves of bread. It sold {b} loaves in the morning and baked {c} more. "
        "How many loaves does it have now?",
        ans, f"The bakery had {a} loaves. After selling {b}, it had {a} - {b} = {a - b}. "
        f"After baking {c} more, it had {a - b} + {c} = {ans}. The answer is {ans}.", "subtract_add")


def _boxes(a: int, b: int) -> WordProblem:
    ans = a * b
    return WordProblem(f"A box holds {a} pencils. How many pencils are in {b} boxes?",
                       ans, f"Each box holds {a} pencils, so {b} boxes hold {b} * {a} = {ans} pencils. "
                       f"The answer is {ans}.", "multiply")


def _share(a: int, b: int) -> WordProblem:
    ans = a // b
    return WordProblem(f"Leo has {a} stickers and shares them equally among {b} friends. "
                       "How many stickers does each friend get?",
                       ans, f"{a} stickers shared among {b} friends is {a} / {b} = {ans} each. "
                       f"The answer is {ans}.", "divide")


def _three_colours(a: int, b: int, c: int) -> WordProblem:
    ans = a + b + c
    return WordProblem(f"A car park has {a} red cars, {b} blue cars and {c} white cars. "
                       "How many cars are in the car park?",
                       ans, f"There are {a} + {b} = {a + b} red and blue cars. With {c} white cars, "
                       f"{a + b} + {c} = {ans}. The answer is {ans}.", "add_three")


def _more_pages(a: int, b: int) -> WordProblem:
    ans = a - b
    return WordProblem(f"Sam read {a} pages on Monday and {b} pages on Tuesday. "
                       "How many more pages did Sam read on Monday than on Tuesday?",
                       ans, f"Sam read {a} pages on Monday and {b} on Tuesday. {a} - {b} = {ans}. "
                       f"The answer is {ans}.", "difference")


def _change(a: int, b: int, c: int) -> WordProblem:
    ans = c - a * b
    return WordProblem(f"A notebook costs {a} dollars. Nina buys {b} notebooks and pays with a {c}-dollar bill. "
                       "How much change does she get?",
                       ans, f"{b} notebooks cost {b} * {a} = {a * b} dollars. Her change is {c} - {a * b} = {ans} "
                       f"dollars. The answer is {ans}.", "change")


def _teams(a: int, b: int, c: int) -> WordProblem:
    ans = (a - b) // c
    return WordProblem(f"A class has {a} students. {b} of them are absent, and the others form {c} equal teams. "
                       "How many students are in each team?",
                       ans, f"{a} - {b} = {a - b} students are present. {a - b} / {c} = {ans}. "
                       f"The answer is {ans}.", "subtract_divide")


def _farm(a: int, b: int) -> WordProblem:
    ans = a + a * b
    return WordProblem(f"A farmer has {a} cows and {b} times as many chickens. How many animals does the farmer "
                       "have?",
                       ans, f"The farmer has {b} * {a} = {a * b} chickens. {a} + {a * b} = {ans}. "
                       f"The answer is {ans}.", "times_as_many")


def _bus(a: int, b: int, c: int, d: int) -> WordProblem:
    ans = a - b + c - d
    return WordProblem(f"A bus has {a} passengers. At the first stop {b} get off and {c} get on. At the second stop "
                       f"{d} get off. How many passengers are on the bus now?",
                       ans, f"After the first stop there are {a} - {b} + {c} = {a - b + c} passengers. After the "
                       f"second, {a - b + c} - {d} = {ans}. The answer is {ans}.", "two_stops")


# Each template with three number sets; divisions are exact and every answer is positive.
_TEMPLATES: tuple[tuple[Callable[..., WordProblem], tuple[tuple[int, ...], ...]], ...] = (
    (_add_multiply, ((3, 2, 4), (7, 3, 5), (12, 4, 6))),
    (_sell_bake, ((20, 8, 5), (35, 17, 9), (50, 24, 13))),
    (_boxes, ((6, 4), (12, 3), (8, 7))),
    (_share, ((12, 3), (30, 5), (48, 6))),
    (_three_colours, ((4, 5, 2), (11, 7, 6), (23, 14, 9))),
    (_more_pages, ((15, 9), (42, 27), (60, 35))),
    (_change, ((3, 4, 20), (5, 3, 50), (7, 6, 100))),
    (_teams, ((26, 2, 4), (31, 1, 5), (38, 2, 9))),
    (_farm, ((4, 3), (6, 2), (9, 5))),
    (_bus, ((15, 4, 6, 3), (28, 9, 5, 7), (40, 12, 8, 10))),
)


def word_problems() -> list[WordProblem]:
    """The 30 test problems: ten templates, three number sets each, interleaved (problem i has template i % 10),
    so the first ``n`` cover as many templates as possible."""
    rows = [[make(*numbers) for numbers in sets] for make, sets in _TEMPLATES]
    return [row[i] for i in range(3) for row in rows]


def _exemplar(question: str, reasoning: str, answer: int) -> WordProblem:
    return WordProblem(question, answer, f"{reasoning} The answer is {answer}.", "exemplar")


# The prompt's solved examples: the lecture's (Wei et al. 2022, Figure 1) and two more, none of them a template above.
EXEMPLARS: tuple[WordProblem, ...] = (
    _exemplar("Roger has 5 tennis balls. He buys 2 more cans of tennis balls. Each can has 3 tennis balls. "
              "How many tennis balls does he have now?",
              f"Roger started with 5 balls. 2 cans of 3 tennis balls each is {2 * 3} tennis balls. "
              f"5 + {2 * 3} = {5 + 2 * 3}.", 5 + 2 * 3),
    _exemplar("A baker makes 4 trays of 6 muffins and sells 10 of them. How many muffins are left?",
              f"4 trays of 6 muffins is 4 * 6 = {4 * 6} muffins. After selling 10, {4 * 6} - 10 = {4 * 6 - 10} "
              "are left.", 4 * 6 - 10),
    _exemplar("Tom has 15 dollars. He buys 2 books that cost 4 dollars each. How much money does he have left?",
              f"2 books cost 2 * 4 = {2 * 4} dollars. 15 - {2 * 4} = {15 - 2 * 4}.", 15 - 2 * 4),
)

_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?![\d,]*\d)|-?\d+(?:\.\d+)?")  # 1,200 (thousands) | 42 | 3.5
_NEXT_QUESTION = re.compile(r"\n\s*\n|\bQ:")  # a blank line or "Q:": the model has moved on


def extract_answer(text: str) -> int | float | None:
    """The model's answer: the last number in ``text`` before it starts a new question.

    The rule: cut ``text`` at its first blank line or ``"Q:"`` (models go on writing new questions of their own,
    with numbers of their own), then take the last number, reading ``1,200`` as 1200.

    Args:
        text: what the model generated after ``"A:"``.

    Returns:
        An int (or a float for a decimal such as ``2.5``), or None if no number comes before the cut.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str (decode the generated tokens first), got {type(text).__name__}")
    head = _NEXT_QUESTION.split(text, maxsplit=1)[0]
    numbers = _NUMBER.findall(head)
    if not numbers:
        return None
    value = numbers[-1].replace(",", "")
    return float(value) if "." in value else int(value)


_NUM = r"-?\d+(?:\.\d+)?"
_STEP = re.compile(rf"({_NUM}(?:\s*[-+*/x×]\s*{_NUM})+)\s*=\s*({_NUM})")  # "5 + 6 = 11", "40 - 12 + 8 = 36"
_TERM = re.compile(rf"\s*([-+*/x×])\s*({_NUM})")


def _evaluate(expression: str) -> float:
    """Value of ``a op b op c ...`` with * and / before + and - (the usual precedence)."""
    first = re.match(_NUM, expression)
    terms = [float(first[0])]  # the sum of these terms is the value
    for op, number in _TERM.findall(expression[first.end():]):
        x = float(number)
        if op in "*x×":
            terms[-1] *= x
        elif op == "/":
            terms[-1] = terms[-1] / x if x else float("nan")
        else:
            terms.append(x if op == "+" else -x)
    return sum(terms)


def arithmetic_steps(text: str) -> list[tuple[str, bool]]:
    """Every ``a op b ... = c`` in ``text`` (op one of + - * x × /), and whether it is right.

    Returns:
        ``[(step, correct), ...]`` in order, e.g. ``[("5 + 6 = 11", True), ("4 + 5 + 2 = 9", False)]``.
    """
    return [(m[0], abs(_evaluate(m[1]) - float(m[2])) < 1e-9) for m in _STEP.finditer(text)]
