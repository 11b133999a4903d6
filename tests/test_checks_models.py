"""Tests for lab_utils.checks.models: check_block_params accepts the count of TransformerBlock and names the
typical miscounts."""

import pytest

from lab_utils.checks import check_block_params


def block_params(d_model, d_ff):
    attention = 4 * d_model * d_model + 4 * d_model  # W_Q, W_K, W_V, W_O and their biases
    mlp = 2 * d_model * d_ff + d_ff + d_model  # d -> d_ff -> d, with biases
    return attention + mlp + 2 * 2 * d_model  # two LayerNorms, weight and bias each


def my_block_params(d_model, d_ff):
    raise NotImplementedError  # your code here


def test_reference_passes(capsys):
    assert check_block_params(block_params) is True
    assert "✓ block parameter counts right" in capsys.readouterr().out


def test_stub_says_not_written(capsys):
    assert check_block_params(my_block_params) is False
    assert "✗ my_block_params is not written yet" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("wrong", "match"),
    [
        (lambda d, f: 4 * d * d + 2 * d * f, "Linear also has a bias"),
        (lambda d, f: block_params(d, f) - 4 * d, "two LayerNorms are missing"),
        (lambda d, f: block_params(d, f) - 2 * d, "one LayerNorm is missing"),
        (lambda d, f: block_params(d, f) - d * d - d, "output projection W_O"),
        (lambda d, f: 12 * d * d + 13 * d, "you assumed d_ff = 4 d"),
        (lambda d, f: block_params(d, f) + f - d, "not d_ff twice"),
        (lambda d, f: block_params(d, f) - f + d, "not d twice"),
        (lambda d, f: block_params(d, f) + 1, r"attention 4 d\^2 \+ 4 d"),  # unrecognised: the parts are listed
        (lambda d, f: [block_params(d, f)], "return one number"),
    ],
)
def test_typical_mistakes_are_named(wrong, match):
    with pytest.raises(AssertionError, match=match):
        check_block_params(wrong)


def test_a_count_right_only_for_d_ff_4d_is_caught():
    # Non-vacuity: the first size has d_ff = 4 d, where the d_ff = 4 d shortcut is right; the others expose it.
    assert 12 * 8 * 8 + 13 * 8 == block_params(8, 32)
    with pytest.raises(AssertionError, match="d_ff=24"):
        check_block_params(lambda d, f: 12 * d * d + 13 * d)
