"""Exercise check for chapter "Parameter-efficient fine-tuning" (comparison): choosing a method on validation.

The rule the student writes: among the methods whose *validation* accuracy is within ``tolerance`` points of the
best validation accuracy, take the one that trains the fewest parameters. The test column is in the table too, as
it is in the chapter's results, because choosing on it is the mistake the exercise is about: a choice made on the
test split makes the test score optimistic, and the test split is then no longer an independent estimate.
"""

from __future__ import annotations

import pandas as pd

from lab_utils.checks.feedback import StudentFunction, exercise_check
from lab_utils.checks.feedback import fail as _fail
from lab_utils.checks.feedback import success as _success

__all__ = ["check_choose_method", "choose_method"]

_COLUMNS = ("trainable", "val_accuracy", "test_accuracy")
_EPS = 1e-12  # accuracies are fractions k/n: forgive float rounding at the boundary, nothing more


def choose_method(table: pd.DataFrame, tolerance: float) -> str:
    """The reference: the fewest-trainable method within ``tolerance`` points (0-100 scale) of the best on validation.

    Args:
        table: one row per method (the index is the method's name) with columns ``trainable`` (a count) and
            ``val_accuracy`` (a fraction in [0, 1]).
        tolerance: accuracy points, e.g. 1.0 for one percentage point.

    Returns:
        The chosen method's name (the index label); the first in table order among equally small ones.
    """
    threshold = table["val_accuracy"].max() - tolerance / 100
    near_best = table[table["val_accuracy"] >= threshold - _EPS]
    return near_best["trainable"].idxmin()


def _table(rows: dict[str, tuple[int, float, float]]) -> pd.DataFrame:
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(_COLUMNS))


# Each case separates the mistakes: in the first, choosing on test, taking the most accurate method and reading the
# tolerance as a fraction (so that everything is "within" it) each give a different wrong answer.
_CASES = (
    (_table({"A": (1_000, 0.950, 0.900), "B": (500, 0.945, 0.930), "C": (100, 0.930, 0.935),
             "D": (10, 0.800, 0.800)}), 1.0),
    (_table({"full": (22_713_986, 0.919, 0.914), "last 2": (3_697_538, 0.914, 0.908),
             "adapters": (753_794, 0.913, 0.912), "LoRA": (443_522, 0.913, 0.912),
             "prompt": (156_290, 0.896, 0.891)}), 1.0),
    (_table({"E": (50, 0.900, 0.910), "F": (5_000, 0.910, 0.890), "G": (20, 0.700, 0.720),
             "H": (300, 0.895, 0.915)}), 2.0),
    (_table({"P": (500, 0.950, 0.900), "Q": (1_000, 0.945, 0.950), "R": (100, 0.944, 0.945),
             "S": (5, 0.500, 0.500)}), 1.0),  # the most accurate is neither the largest nor the smallest
    (_table({"only": (7, 0.5, 0.5)}), 0.0),
)


def _mistakes(table: pd.DataFrame, tolerance: float) -> list[tuple[str, str]]:
    """What each typical mistake returns on ``table``, with the hint that names it (tried in order)."""
    on_test = table.rename(columns={"val_accuracy": "unused", "test_accuracy": "val_accuracy"})
    return [
        (choose_method(on_test, tolerance), "you chose on the test accuracy: choose on validation (val_accuracy) "
                                            "and look at the test split only once, for the method you chose"),
        (table["val_accuracy"].idxmax(), "you returned the most accurate method: among those within the tolerance "
                                         "of the best, return the one that trains the fewest parameters"),
        (choose_method(table, 100 * tolerance), "the tolerance is in points (1.0 = one percentage point) and the "
                                                "accuracies are fractions: compare with best - tolerance / 100"),
        (table["trainable"].idxmin(), "the smallest method overall is not within the tolerance: keep only methods "
                                      "whose val_accuracy >= best - tolerance / 100"),
        (table.loc[table["val_accuracy"] >= table["val_accuracy"].max() - tolerance / 100 - _EPS,
                   "trainable"].idxmax(),
         "you returned the method that trains the most parameters: the point is to train the fewest"),
    ]


@exercise_check
def check_choose_method(fn: StudentFunction) -> None:
    """Check ``fn(table, tolerance) -> str``: the method (index label) with the fewest trainable parameters whose
    validation accuracy is within ``tolerance`` points of the best validation accuracy.

    The tables have columns ``trainable``, ``val_accuracy`` and ``test_accuracy`` (fractions); the cases include
    the course's own comparison and tables built so that choosing on test, taking the most accurate method and
    misreading the tolerance give different wrong answers. A wrong answer is named by the typical mistake that
    gives the student's answers on every case. The student's function must not change the table it is given.
    """
    answers = []
    for table, tolerance in _CASES:
        before = table.copy()
        call = f"{fn.name}(table of {list(table.index)}, tolerance={tolerance})"
        got = fn(table, tolerance)
        if not table.equals(before):
            _fail(f"{call} changed the table it was given (e.g. sorted it in place or added a column): work on a "
                  "copy")
        if isinstance(got, pd.Series | pd.DataFrame):
            _fail(f"{call} returned a {type(got).__name__}: return the method's name, the table's index label")
        if got not in table.index:
            _fail(f"{call} returned {got!r}, which is not one of the methods {list(table.index)}: return an index "
                  "label")
        answers.append((call, got, choose_method(table, tolerance)))
    wrong = [(call, got, expected) for call, got, expected in answers if got != expected]
    if not wrong:
        _success("method chosen on validation: the fewest trainable parameters within the tolerance of the best")
        return
    mistakes = [_mistakes(table, tolerance) for table, tolerance in _CASES]  # per case: [(answer, hint), ...]
    hint = next((mistakes[0][i][1] for i in range(len(mistakes[0]))
                 if all(got == case[i][0] for (_, got, _), case in zip(answers, mistakes, strict=True))),
                "keep the methods with val_accuracy >= best val_accuracy - tolerance / 100, then take the one with "
                "the fewest trainable parameters")
    call, got, expected = wrong[0]
    _fail(f"{call} returned {got!r}, expected {expected!r}: {hint}")
