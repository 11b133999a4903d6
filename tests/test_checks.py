"""Tests for lab_utils.checks: correct answers pass with a ✓ line, typical mistakes fail with a useful message."""

import math

import pytest
import torch

from lab_utils.checks import check_causal_mask, check_mlm_masking, check_perplexity
from lab_utils.masks import causal_mask
from lab_utils.objectives import IGNORE_INDEX, mask_tokens

# --- check_causal_mask -------------------------------------------------------------------------------------


def test_causal_check_accepts_a_correct_mask(capsys):
    check_causal_mask(lambda T: torch.tril(torch.ones(T, T, dtype=torch.bool)))
    check_causal_mask(causal_mask)
    assert capsys.readouterr().out.count("✓") == 2


@pytest.mark.parametrize(
    ("fn", "match"),
    [
        (lambda T: torch.tril(torch.ones(T, T)), "dtype torch.float32.*bool"),
        (lambda T: torch.tril(torch.ones(T, T, dtype=torch.bool), diagonal=-1), "diagonal"),  # j < i
        (
            lambda T: torch.tril(torch.ones(T, T, dtype=torch.bool), diagonal=1),
            r"row 0 .* keys 0\.\.0 allowed.*see the future",
        ),
        (lambda T: torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1), "inverted"),  # True = blocked
        (lambda T: torch.triu(torch.ones(T, T, dtype=torch.bool)), "transposed"),
        (lambda T: torch.tril(torch.ones(T, T + 1, dtype=torch.bool)), r"shape \(8, 9\)"),
        (lambda T: [[True]], "torch.Tensor"),
    ],
)
def test_causal_check_rejects_wrong_masks(fn, match):
    with pytest.raises(AssertionError, match=match):
        check_causal_mask(fn)


# --- check_mlm_masking -------------------------------------------------------------------------------------


def test_mlm_check_accepts_the_reference(capsys):
    check_mlm_masking(mask_tokens)
    assert "✓ MLM masking" in capsys.readouterr().out


def with_probability(p):
    """The reference masking, but selecting tokens with probability `p` whatever the caller asks."""

    def fn(input_ids, **kwargs):
        return mask_tokens(input_ids, **{**kwargs, "mlm_probability": p})

    return fn


def all_mask(input_ids, *, mask_token_id, generator, special_ids, **_):
    """Selects correctly but always writes [MASK] (no 10% random, no 10% unchanged)."""
    special = torch.isin(input_ids, torch.tensor(special_ids))
    selected = (torch.rand(input_ids.shape, generator=generator) < 0.15) & ~special
    return torch.where(selected, mask_token_id, input_ids), torch.where(selected, input_ids, IGNORE_INDEX)


def labels_everywhere(input_ids, **kwargs):
    inputs, _ = mask_tokens(input_ids, **kwargs)
    return inputs, input_ids.clone()  # forgot -100 on unselected positions


def masks_specials(input_ids, **kwargs):
    return mask_tokens(input_ids, **{**kwargs, "special_ids": []})  # ignores the special tokens


def in_place(input_ids, **kwargs):
    inputs, labels = mask_tokens(input_ids, **kwargs)
    input_ids.copy_(inputs)
    return inputs, labels


def unseeded(input_ids, **kwargs):
    return mask_tokens(input_ids, **{**kwargs, "generator": None})


@pytest.mark.parametrize(
    ("fn", "match"),
    [
        (with_probability(0.20), r"tokens selected is 0\.(19|20)\d, expected 0\.150"),
        (with_probability(0.10), r"tokens selected is 0\.(09|10)\d, expected 0\.150"),
        (all_mask, "replaced by \\[MASK\\] is 1.000, expected 0.800"),
        (labels_everywhere, "special token .* was selected"),
        (masks_specials, "special token"),
        (in_place, "in place"),
        (unseeded, "same generator seed"),
        (lambda ids, **kw: mask_tokens(ids, **kw)[0], "tuple"),
    ],
)
def test_mlm_check_rejects_wrong_masking(fn, match):
    with pytest.raises(AssertionError, match=match):
        check_mlm_masking(fn)


def test_mlm_check_reports_missing_minus_100_on_ordinary_tokens():
    def fn(input_ids, *, special_ids, **kwargs):
        inputs, labels = mask_tokens(input_ids, special_ids=special_ids, **kwargs)
        ordinary = ~torch.isin(input_ids, torch.tensor(special_ids))
        return inputs, torch.where(ordinary, input_ids, labels)  # label every ordinary token

    with pytest.raises(AssertionError, match="label -100 was changed|fraction of non-special tokens selected"):
        check_mlm_masking(fn)


# --- check_perplexity --------------------------------------------------------------------------------------


def test_perplexity_check_accepts_exp(capsys):
    check_perplexity(math.exp)
    check_perplexity(lambda loss: torch.exp(torch.tensor(loss)))  # a 0-d tensor is fine
    assert capsys.readouterr().out.count("✓") == 2


@pytest.mark.parametrize(
    ("fn", "match"),
    [
        (lambda loss: 2**loss, "2\\*\\*loss.*nats"),
        (lambda loss: math.exp(-loss), "exp\\(-loss\\)"),
        (lambda loss: loss, "loss itself"),
        (lambda loss: math.exp(loss) + 1, r"perplexity\(0\.0000\) = 2, expected 1"),
        (lambda loss: "e^loss", "return a number"),
    ],
)
def test_perplexity_check_rejects_wrong_formulas(fn, match):
    with pytest.raises(AssertionError, match=match):
        check_perplexity(fn)
