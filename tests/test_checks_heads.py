"""Tests for lab_utils.checks.heads: check_head_params accepts the classifier's count and names the typical
miscounts."""

import pytest

from lab_utils.checks import check_head_params


def head_params(hidden_size, num_labels):
    return hidden_size * num_labels + num_labels  # Linear(hidden_size, num_labels): weights + biases


def my_head_params(hidden_size, num_labels):
    raise NotImplementedError  # your code here


def test_reference_passes(capsys):
    assert check_head_params(head_params) is True
    assert "✓ head parameter counts right" in capsys.readouterr().out


def test_a_module_count_passes_too():
    import torch

    assert check_head_params(lambda h, n: sum(p.numel() for p in torch.nn.Linear(h, n).parameters())) is True


def test_stub_says_not_written(capsys):
    assert check_head_params(my_head_params) is False
    assert "✗ my_head_params is not written yet" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("wrong", "match"),
    [
        (lambda h, n: h * n, "also has a bias: one per label"),
        (lambda h, n: head_params(h, n) + h * h + h, "pooler .* is part of the pretrained BertModel"),
        (lambda h, n: h * n + h, r"one value per output \(num_labels\), not per input"),
        (lambda h, n: h * (n - 1) + n - 1, "even for two classes"),  # for 2 labels, the same as a single score
        (lambda h, n: h + 1, "not a single score"),
        (lambda h, n: h * h + h, "pooler's dense layer"),
        (lambda h, n: 2 * head_params(h, n), "one Linear, not two"),
        (lambda h, n: head_params(h, n) + 1, r"hidden_size \* num_labels weights \+ num_labels biases"),
        (lambda h, n: [head_params(h, n)], "return one number"),
    ],
)
def test_typical_mistakes_are_named(wrong, match):
    with pytest.raises(AssertionError, match=match):
        check_head_params(wrong)


def test_a_single_score_is_named_on_a_multiclass_size():
    # For 2 labels, one score and num_labels - 1 outputs are the same count: the 3-class size tells them apart
    with pytest.raises(AssertionError, match="num_labels=3\\).*not num_labels - 1"):
        check_head_params(lambda h, n: head_params(h, n) if n == 2 else h * (n - 1) + n - 1)
    with pytest.raises(AssertionError, match="num_labels=3\\).*not a single score"):
        check_head_params(lambda h, n: head_params(h, n) if n == 2 else h + 1)


def test_bias_per_input_is_caught_although_right_when_square():
    # Non-vacuity: with hidden_size = num_labels the wrong bias size gives the right count; other sizes expose it.
    assert 8 * 8 + 8 == head_params(8, 8)
    with pytest.raises(AssertionError, match="hidden_size=384, num_labels=2"):
        check_head_params(lambda h, n: h * n + h)
