"""Tests for lab_utils.checks.attention: the reference passes, typical mistakes fail with a message naming them."""

import math

import pytest
import torch

from lab_utils.attention import scaled_dot_product_attention
from lab_utils.checks import check_attention


def my_attention(q, k, v, mask=None):
    raise NotImplementedError  # your code here


def attention(q, k, v, mask=None, *, scale=None, dim=-1, fill=float("-inf"), after=False, invert=False):
    """A hand-written attention with one knob per typical mistake (defaults: the right answer)."""
    scores = q @ k.transpose(-2, -1) * (1 / math.sqrt(q.shape[-1]) if scale is None else scale)
    if mask is not None and invert:
        mask = ~mask
    if mask is not None and not after:
        scores = scores.masked_fill(~mask, fill)
    weights = scores.softmax(dim=dim)
    if mask is not None and after:
        weights = weights * mask
    return weights @ v


def test_accepts_the_reference_and_a_hand_written_version(capsys):
    assert check_attention(lambda q, k, v, mask=None: scaled_dot_product_attention(q, k, v, mask)[0]) is True
    assert check_attention(attention) is True
    assert check_attention(lambda q, k, v, mask=None: attention(q, k, v, mask, fill=-1e9)) is True  # -1e9 is fine
    assert capsys.readouterr().out.count("✓ attention matches") == 3


def test_stub_returns_false_and_says_not_written(capsys):
    assert check_attention(my_attention) is False
    assert "✗ my_attention is not written yet: replace `raise NotImplementedError`" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("fn", "match"),
    [
        (lambda q, k, v, mask=None: attention(q, k, v, mask, scale=1.0), "not scaled: divide q @ k\\^T by sqrt\\(d\\)"),
        (lambda q, k, v, mask=None: attention(q, k, v, mask, scale=1 / q.shape[-1]), "divided by d; divide by sqrt"),
        (lambda q, k, v, mask=None: attention(q, k, v, mask, scale=v.shape[-1] ** -0.5), "divided by sqrt\\(d_v\\)"),
        (lambda q, k, v, mask=None: attention(q, k, v, mask, dim=-2), "softmax runs over the queries"),
        (lambda q, k, v, mask=None: attention(q, k, v, mask, invert=True), "case 'causal mask.*mask is inverted"),
        (lambda q, k, v, mask=None: attention(q, k, v), "case 'causal mask.*mask is ignored"),
        (lambda q, k, v, mask=None: attention(q, k, v, mask, after=True), "after the softmax.*no longer sum to 1"),
        (lambda q, k, v, mask=None: attention(q, k, v, mask, fill=0.0), "set to 0.*set them to -inf"),
        (lambda q, k, v, mask=None: scaled_dot_product_attention(q, k, v, mask)[1], "returned the attention weights"),
        (lambda q, k, v, mask=None: scaled_dot_product_attention(q, k, v, mask), "returned a tuple"),
    ],
)
def test_rejects_typical_mistakes(fn, match):
    with pytest.raises(AssertionError, match=match):
        check_attention(fn)


def test_k_instead_of_k_transposed_is_a_shape_error_with_a_hint():
    with pytest.raises(RuntimeError) as info:
        check_attention(lambda q, k, v, mask=None: (q @ k / math.sqrt(q.shape[-1])).softmax(-1) @ v)
    assert any("k.transpose(-2, -1)" in note for note in info.value.__notes__)


def test_is_not_vacuous_a_mask_that_only_works_for_square_2d_masks_fails():
    def fn(q, k, v, mask=None):  # handles the causal (T, T) mask, ignores any other mask
        return attention(q, k, v, mask if mask is not None and mask.ndim == 2 else None)

    with pytest.raises(AssertionError, match="case 'padding mask.*mask is ignored"):
        check_attention(fn)


def test_is_not_vacuous_a_function_assuming_3d_inputs_fails():
    def fn(q, k, v, mask=None):  # right for (T, d) inputs only: transposes dims 0 and 1 instead of the last two
        scores = q @ k.transpose(0, 1) / math.sqrt(q.shape[-1])
        return scores.softmax(-1) @ v

    with pytest.raises(RuntimeError):
        check_attention(fn)


def test_rejects_in_place_changes_to_the_inputs():
    def fn(q, k, v, mask=None):
        q /= math.sqrt(q.shape[-1])  # scales the caller's q
        return attention(q, k, v, mask, scale=1.0)

    with pytest.raises(AssertionError, match="modified its inputs in place"):
        check_attention(fn)


def test_does_not_touch_the_global_rng():
    state = torch.get_rng_state()
    check_attention(lambda q, k, v, mask=None: attention(q, k, v, mask) + 0 * torch.rand(1))
    assert torch.equal(torch.get_rng_state(), state)
