"""Tests for lab_utils.checks.objectives: check_mlm_masking and check_mean_nll."""

import math
import time

import pytest
import torch
import torch.nn.functional as F

from lab_utils.checks import check_mean_nll, check_mlm_masking
from lab_utils.objectives import IGNORE_INDEX, mask_tokens

# --- check_mlm_masking -------------------------------------------------------------------------------------


def my_mask_tokens(input_ids, *, mask_token_id, vocab_size, special_ids=(), mlm_probability=0.15, generator=None):
    raise NotImplementedError  # your code here


def test_mlm_accepts_the_reference_quickly(capsys):
    start = time.perf_counter()
    assert check_mlm_masking(mask_tokens) is True
    assert time.perf_counter() - start < 1.0
    assert "✓ MLM masking" in capsys.readouterr().out


def test_mlm_stub_returns_false_and_says_not_written(capsys):
    assert check_mlm_masking(my_mask_tokens) is False
    assert "✗ my_mask_tokens is not written yet: replace `raise NotImplementedError`" in capsys.readouterr().out


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


def with_replacements(make):
    """The reference masking, with the random replacements replaced by `make(input_ids, inputs)`."""

    def fn(input_ids, *, vocab_size, **kwargs):
        inputs, labels = mask_tokens(input_ids, vocab_size=vocab_size, **kwargs)
        randomised = (labels != IGNORE_INDEX) & (inputs != input_ids) & (inputs != kwargs["mask_token_id"])
        return torch.where(randomised, make(input_ids, inputs), inputs), labels

    return fn


def labels_everywhere(input_ids, **kwargs):
    inputs, _ = mask_tokens(input_ids, **kwargs)
    return inputs, input_ids.clone()  # forgot -100 on unselected positions


def labels_on_ordinary_tokens(input_ids, *, special_ids, **kwargs):
    inputs, labels = mask_tokens(input_ids, special_ids=special_ids, **kwargs)
    ordinary = ~torch.isin(input_ids, torch.tensor(special_ids))
    return inputs, torch.where(ordinary, input_ids, labels)  # labels every ordinary token


def masks_specials(input_ids, **kwargs):
    return mask_tokens(input_ids, **{**kwargs, "special_ids": []})  # ignores the special tokens


def in_place(input_ids, **kwargs):
    inputs, labels = mask_tokens(input_ids, **kwargs)
    input_ids.copy_(inputs)
    return inputs, labels


def global_rng(input_ids, **kwargs):
    return mask_tokens(input_ids, **{**kwargs, "generator": None})  # torch.rand without generator=


def reseeds(input_ids, **kwargs):
    torch.manual_seed(0)  # "for reproducibility", ignoring the generator it is given
    return global_rng(input_ids, **kwargs)


def own_generator(input_ids, **kwargs):
    return mask_tokens(input_ids, **{**kwargs, "generator": torch.Generator().manual_seed(0)})


@pytest.mark.parametrize(
    ("fn", "match"),
    [
        (with_probability(0.20), r"tokens selected is 0\.(19|20)\d, expected 0\.150"),
        (with_probability(0.10), r"tokens selected is 0\.(09|10)\d, expected 0\.150"),
        (all_mask, "replaced by \\[MASK\\] is 1.000, expected 0.800"),
        (labels_everywhere, "labels are set at 100% of the positions.*not selected needs label -100"),
        (labels_on_ordinary_tokens, "labels are set at .* not selected needs label -100"),
        (masks_specials, "special token .* was selected"),
        (in_place, "in place"),
        (global_rng, "global random generator"),
        (reseeds, "global random generator"),
        (own_generator, "same result for generators seeded 0 and 1"),
        (with_replacements(lambda ids, inputs: torch.full_like(ids, 7)), r"are the same id \(7\)"),
        (with_replacements(lambda ids, inputs: ids.roll(1, dims=1)), "copies of the token on their left"),
        (with_replacements(lambda ids, inputs: inputs.roll(1, dims=1)), "copies of the token on their left"),
        (with_replacements(lambda ids, inputs: ids.roll(5, dims=1)), "copies of a token of the same sequence"),
        (with_replacements(lambda ids, inputs: (ids * 7919) % 100), "lower half of the vocabulary"),
        (with_replacements(lambda ids, inputs: ids + 1000), r"outside \[0, vocab_size=1000\)"),
        (lambda ids, **kw: mask_tokens(ids, **kw)[0], "tuple"),
    ],
)
def test_mlm_rejects_wrong_masking(fn, match):
    with pytest.raises(AssertionError, match=match):
        check_mlm_masking(fn)


def test_mlm_neither_depends_on_nor_changes_the_global_rng():
    for seed in (0, 1):
        torch.manual_seed(seed)
        state = torch.get_rng_state()
        assert check_mlm_masking(mask_tokens)
        with pytest.raises(AssertionError):
            check_mlm_masking(reseeds)
        assert torch.equal(torch.get_rng_state(), state)


# --- check_mean_nll ----------------------------------------------------------------------------------------


def mean_nll(batches):
    total = sum(F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum") for logits, labels in batches)
    return total / sum(int((labels != IGNORE_INDEX).sum()) for _, labels in batches)


def my_mean_nll(batches):
    raise NotImplementedError  # your code here


def test_mean_nll_accepts_the_reference_as_a_tensor_or_a_float(capsys):
    assert check_mean_nll(mean_nll) is True
    assert check_mean_nll(lambda batches: mean_nll(batches).item()) is True
    assert check_mean_nll(lambda batches: mean_nll([(lg.requires_grad_(), y) for lg, y in batches])) is True
    assert capsys.readouterr().out.count("✓ mean NLL") == 3


def test_mean_nll_stub_returns_false_and_says_not_written(capsys):
    assert check_mean_nll(my_mean_nll) is False
    assert "✗ my_mean_nll is not written yet: replace `raise NotImplementedError`" in capsys.readouterr().out


def per_position(batches, *, log=torch.log_softmax):
    """(nll, labelled) per batch: the NLL at every position (0 where there is no target) and the target mask."""
    out = []
    for logits, labels in batches:
        labelled = labels != IGNORE_INDEX
        logp = log(logits, dim=-1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]  # (B, T)
        out.append((-logp * labelled, labelled))
    return out


@pytest.mark.parametrize(
    ("fn", "match"),
    [
        (lambda b: sum(F.cross_entropy(lg.flatten(0, 1), y.flatten()) for lg, y in b) / len(b), "per-batch means"),
        (lambda b: sum(n.sum() for n, _ in per_position(b)) / sum(m.numel() for _, m in per_position(b)), "-100 ones"),
        (lambda b: mean_nll(b) / math.log(2), "bits"),
        (lambda b: sum(F.cross_entropy(lg.flatten(0, 1), y.flatten(), reduction="sum") for lg, y in b), "the sum"),
        (
            lambda b: (
                sum(F.nll_loss(lg.flatten(0, 1), y.flatten(), reduction="sum") for lg, y in b)
                / sum((y != -100).sum() for _, y in b)
            ),
            "raw logits.*log_softmax",
        ),  # fmt: skip
        (lambda b: F.cross_entropy(b[0][0].flatten(0, 1), b[0][1].flatten()), r"returned 0\.\d+, expected 0\.60"),
        (lambda b: [mean_nll(b)], "returned a list"),
        (lambda b: torch.stack([mean_nll(b)] * 2), r"Tensor of shape \(2,\); return one number"),
    ],
)
def test_mean_nll_rejects_typical_mistakes(fn, match):
    with pytest.raises(AssertionError, match=match):
        check_mean_nll(fn)


def test_mean_nll_is_not_vacuous_a_value_right_for_one_data_set_fails():
    first = []

    def memorised(batches):  # right the first time, then repeats that value
        first.append(first[0] if first else float(mean_nll(batches)))
        return first[-1]

    with pytest.raises(AssertionError, match="expected"):
        check_mean_nll(memorised)
