"""Tests for lab_utils.checks.memory: check_model_mib."""

import pytest
import torch

from lab_utils.checks import check_model_mib


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
