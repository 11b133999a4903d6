"""Tests for lab_utils.checks.memory: check_model_mib, check_training_mib, check_max_batch."""

import math

import numpy as np
import pytest
import torch

from lab_utils.checks import check_max_batch, check_model_mib, check_training_mib


def model_mib(n_params, dtype):
    info = torch.finfo(dtype) if dtype.is_floating_point else torch.iinfo(dtype)
    return n_params * info.bits / 8 / 2**20


def my_model_mib(n_params, dtype):
    raise NotImplementedError  # your code here


def test_accepts_correct_answers_with_or_without_input_validation(capsys):
    assert check_model_mib(model_mib) is True
    assert check_model_mib(lambda n, dtype: torch.tensor(n * dtype.itemsize / 2**20)) is True  # a 0-d tensor is fine

    def validating(n_params, dtype):  # the notebook's solution raises on a negative count; not demanded
        if n_params < 0:
            raise ValueError(f"n_params must be >= 0, got {n_params}")
        return model_mib(n_params, dtype)

    assert check_model_mib(validating) is True
    assert capsys.readouterr().out.count("✓ model_mib") == 3


def test_does_not_demand_a_value_error():
    assert check_model_mib(lambda n, dtype: n * dtype.itemsize / 2**20) is True  # accepts n < 0 silently: fine


def test_stub_returns_false_and_says_not_written(capsys):
    assert check_model_mib(my_model_mib) is False
    assert "✗ my_model_mib is not written yet: replace `raise NotImplementedError`" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("fn", "match"),
    [
        (lambda n, dtype: n * dtype.itemsize / 1e6, r"divided by 10\*\*6"),
        (lambda n, dtype: n * dtype.itemsize, "number of bytes; divide by 2\\*\\*20"),
        (lambda n, dtype: n * dtype.itemsize / 2**30, "GiB"),
        (lambda n, dtype: model_mib(n, dtype) * 8, "counted bits"),
        (lambda n, dtype: n * 4 / 2**20, r"float16\) returned .*4 bytes \(fp32\) for every dtype"),
        (lambda n, dtype: n / 2**20, r"float32\) returned .*one byte per weight"),
        (
            lambda n, dtype: n * dtype.itemsize / 2**20 + 1,
            r"float32\) returned 514\.\d+ MiB; expected 513\.\d+: size = n_params \* bytes per weight / 2\*\*20",
        ),
        (lambda n, dtype: f"{n * dtype.itemsize / 2**20:.1f} MiB", "returned a str; return one number"),
    ],
)
def test_rejects_typical_mistakes(fn, match):
    with pytest.raises(AssertionError, match=match):
        check_model_mib(fn)


# --- check_training_mib: fn(n_params, optimizer) -> MiB of weights + gradients + optimizer state in fp32 --------------
STATE = {"sgd": 0, "momentum": 1, "adam": 2}


def training_mib(n_params, optimizer):
    return n_params * 4 * (2 + STATE[optimizer]) / 2**20


def my_training_mib(n_params, optimizer):
    raise NotImplementedError  # your code here


def test_training_accepts_the_reference_and_the_library(capsys):
    from lab_utils.memory import estimate_training_memory

    assert check_training_mib(training_mib) is True
    assert check_training_mib(lambda n, o: estimate_training_memory(n, optimizer=o).to_dict()["total"]) is True
    assert check_training_mib(lambda n, o: torch.tensor(training_mib(n, o), dtype=torch.float64)) is True
    assert capsys.readouterr().out.count("✓ training_mib") == 3


def test_training_stub_returns_false_and_says_not_written(capsys):
    assert check_training_mib(my_training_mib) is False
    assert "✗ my_training_mib is not written yet" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("copies", "match"),
    [
        ({"sgd": 1, "momentum": 2, "adam": 3}, r"'sgd'\) returned .*gradients are missing"),
        ({"sgd": 2, "momentum": 2, "adam": 2}, r"'momentum'\) returned .*optimizer state is missing"),
        ({"sgd": 2, "momentum": 3, "adam": 3}, r"'adam'\) returned .*two moments per weight \(m and v\), not one"),
        ({"sgd": 2, "momentum": 4, "adam": 4}, r"'momentum'\) returned .*one copy \(the velocity\), not two"),
        ({"sgd": 1, "momentum": 1, "adam": 1}, "weights alone"),
        ({"sgd": 3, "momentum": 4, "adam": 5}, "plain SGD keeps no state"),
    ],
)
def test_training_names_counting_mistakes(copies, match):
    with pytest.raises(AssertionError, match=match):
        check_training_mib(lambda n, o: n * 4 * copies[o] / 2**20)


def test_forgotten_gradients_and_one_adam_moment_are_told_apart():
    # Both give 12 bytes per parameter for Adam; only momentum and SGD tell them apart.
    assert training_mib(10, "momentum") * 4 / 3 == training_mib(10, "adam")
    with pytest.raises(AssertionError, match="gradients are missing") as forgot:
        check_training_mib(lambda n, o: n * 4 * (1 + STATE[o]) / 2**20)
    with pytest.raises(AssertionError, match="not one") as one_moment:
        check_training_mib(lambda n, o: n * 4 * (2 + min(STATE[o], 1)) / 2**20)
    assert "moments" not in str(forgot.value) and "gradients" not in str(one_moment.value)


@pytest.mark.parametrize(
    ("fn", "match"),
    [
        (lambda n, o: training_mib(n, o) * 2**20 / 1e6, r"divided by 10\*\*6 \(a MB\)"),
        (lambda n, o: training_mib(n, o) / 2**10, "that is GiB"),
        (lambda n, o: training_mib(n, o) * 2**20, "a number of bytes"),
        (lambda n, o: training_mib(n, o) * 8, "counted bits"),
        (lambda n, o: training_mib(n, o) / 2, r"2 bytes per value \(fp16\)"),
        # two mistakes at once: both are named
        (lambda n, o: n * 4 * (1 + STATE[o]) / 1e6, r"gradients are missing: .*; you divided by 10\*\*6 \(a MB\)"),
        (lambda n, o: training_mib(n, o) + 1, r"returned 836\.\d+ MiB; expected 835\.\d+: 2 fp32 copies x 4 bytes"),
        (lambda n, o: f"{training_mib(n, o):.1f} MiB", "returned a str; return one number"),
    ],
)
def test_training_names_unit_mistakes(fn, match):
    with pytest.raises(AssertionError, match=match):
        check_training_mib(fn)


def test_training_rejects_an_answer_right_for_adam_only():
    with pytest.raises(AssertionError, match="'sgd'"):  # non-vacuity: every optimizer is checked
        check_training_mib(lambda n, o: training_mib(n, "adam"))


# --- check_max_batch: fn(budget_mib, fixed_mib, per_example_mib) -> largest int b with fixed + b * per <= budget -----
def max_batch(budget_mib, fixed_mib, per_example_mib):
    return max(0, math.floor((budget_mib - fixed_mib) / per_example_mib))


def my_max_batch(budget_mib, fixed_mib, per_example_mib):
    raise NotImplementedError  # your code here


def loop_max_batch(budget_mib, fixed_mib, per_example_mib):
    b = 0
    while fixed_mib + (b + 1) * per_example_mib <= budget_mib:
        b += 1
    return b


def test_max_batch_accepts_correct_answers(capsys):
    assert check_max_batch(max_batch) is True
    assert check_max_batch(loop_max_batch) is True
    assert check_max_batch(lambda b, f, p: max(0, int((b - f) // p))) is True
    assert check_max_batch(lambda b, f, p: np.int64(max_batch(b, f, p))) is True
    assert check_max_batch(lambda b, f, p: torch.tensor(max_batch(b, f, p))) is True  # a 0-d integer tensor
    assert capsys.readouterr().out.count("✓ max_batch") == 5


def test_max_batch_stub_returns_false_and_says_not_written(capsys):
    assert check_max_batch(my_max_batch) is False
    assert "✗ my_max_batch is not written yet" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("fn", "match"),
    [
        (lambda b, f, p: max(0, math.ceil((b - f) / p)), r"\(15360, 2048, 300\) returned 45; .*you rounded up"),
        (lambda b, f, p: max(0, round((b - f) / p)), r"\(15360, 2048, 320\.5\) returned 42; .*rounded to the nearest"),
        (lambda b, f, p: max(0, math.floor(b / p)), "returned 51; expected 44: you ignored the fixed cost"),
        (lambda b, f, p: (b - f) / p, r"returned 44\.37\d*; expected 44: the largest b"),
        (lambda b, f, p: float(max_batch(b, f, p)), r"returned 44\.0 \(a float\); .*return an int"),
        (lambda b, f, p: math.floor((b - f) / p), r"\(1000, 1200, 10\) returned -20; .*return 0, not a negative"),
        (lambda b, f, p: int((b - f) / p), r"\(1000, 1200, 10\) returned -20; .*not a negative"),
        (lambda b, f, p: max(0, math.ceil((b - f) / p) - 1), r"\(15360, 2048, 416\) returned 31; .*use <=, not <"),
        (lambda b, f, p: max(0, math.floor((b - f) / p) + 1), r"returned 45; expected 44: you rounded up"),
        (lambda b, f, p: max(0, max_batch(b, f, p) - 2), r"returned 42; expected 44: the largest b"),
        (lambda b, f, p: str(max_batch(b, f, p)), "returned a str"),
    ],
)
def test_max_batch_names_typical_mistakes(fn, match):
    with pytest.raises(AssertionError, match=match):
        check_max_batch(fn)


def test_max_batch_catches_off_by_one_only_visible_at_an_exact_fit():
    # `<` instead of `<=` in a loop agrees with the reference everywhere except at an exact fit.
    def strict_loop(budget_mib, fixed_mib, per_example_mib):
        b = 0
        while fixed_mib + (b + 1) * per_example_mib < budget_mib:
            b += 1
        return b

    assert strict_loop(15360, 2048, 300) == max_batch(15360, 2048, 300)
    with pytest.raises(AssertionError, match=r"exact fit \(2048 \+ 32 \* 416 == 15360\)"):
        check_max_batch(strict_loop)

