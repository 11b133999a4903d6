"""Tests for lab_utils.checks.selection: check_choose_method accepts the choose-on-validation rule and names the
typical wrong rules."""

import pandas as pd
import pytest

from lab_utils.checks import check_choose_method
from lab_utils.checks.selection import choose_method


def fewest_within(table, tolerance):
    best = table["val_accuracy"].max()
    ok = table[table["val_accuracy"] >= best - tolerance / 100 - 1e-12]
    return ok.sort_values("trainable", kind="stable").index[0]


def on_test(table, tolerance):
    best = table["test_accuracy"].max()
    return table[table["test_accuracy"] >= best - tolerance / 100]["trainable"].idxmin()


def most_accurate(table, tolerance):
    return table["val_accuracy"].idxmax()


def tolerance_as_fraction(table, tolerance):
    best = table["val_accuracy"].max()
    return table[table["val_accuracy"] >= best - tolerance]["trainable"].idxmin()


def most_trainable(table, tolerance):
    best = table["val_accuracy"].max()
    return table[table["val_accuracy"] >= best - tolerance / 100 - 1e-12]["trainable"].idxmax()


def adds_a_column(table, tolerance):
    table["gap"] = table["val_accuracy"].max() - table["val_accuracy"]
    return choose_method(table, tolerance)


def returns_row(table, tolerance):
    return table.loc[choose_method(table, tolerance)]


def returns_position(table, tolerance):
    return list(table.index).index(choose_method(table, tolerance))


def my_choose_method(table, tolerance):
    raise NotImplementedError  # your code here


def test_references_pass(capsys):
    assert check_choose_method(choose_method) is True
    assert check_choose_method(fewest_within) is True
    assert "✓ method chosen on validation" in capsys.readouterr().out


@pytest.mark.parametrize(("wrong", "message"), [
    (on_test, "you chose on the test accuracy"),
    (most_accurate, "you returned the most accurate method"),
    (tolerance_as_fraction, "the tolerance is in points"),
    (most_trainable, "trains the most parameters"),
    (adds_a_column, "changed the table it was given"),
    (returns_row, "return the method's name"),
    (returns_position, "not one of the methods"),
])
def test_typical_mistakes_are_named(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_choose_method(wrong)


def test_stub_is_not_written_yet(capsys):
    assert check_choose_method(my_choose_method) is False
    assert "not written yet" in capsys.readouterr().out


def test_reference_rule_on_a_small_table():
    table = pd.DataFrame({"trainable": [10, 5, 1], "val_accuracy": [0.9, 0.895, 0.7],
                          "test_accuracy": [0.9, 0.9, 0.9]}, index=["big", "mid", "tiny"])
    assert choose_method(table, 1.0) == "mid"
    assert choose_method(table, 0.0) == "big"
    assert choose_method(table, 25.0) == "tiny"
