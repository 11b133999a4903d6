"""Tests for lab_utils.checks.prompts: check_prepend_prompt accepts correct prepend steps (the reference and a
student-style one) and names the typical mistakes."""

import pytest
import torch

from lab_utils.checks.prompts import check_prepend_prompt
from lab_utils.prompt_tuning import prepend_prompt


def student_prepend(prompt, inputs_embeds, attention_mask):
    B = inputs_embeds.shape[0]
    prompts = prompt.unsqueeze(0).repeat(B, 1, 1)  # (B, n, h): repeat instead of expand is fine
    ones = torch.ones(B, prompt.shape[0], dtype=attention_mask.dtype)
    return torch.cat([prompts, inputs_embeds], dim=1), torch.cat([ones, attention_mask], dim=1)


def my_prepend_prompt(prompt, inputs_embeds, attention_mask):
    raise NotImplementedError  # your code here


def test_reference_passes(capsys):
    assert check_prepend_prompt(prepend_prompt) is True
    assert "✓ prompt prepended to every sequence" in capsys.readouterr().out


def test_student_style_passes():
    assert check_prepend_prompt(student_prepend) is True


def test_float_mask_passes():
    assert check_prepend_prompt(lambda p, e, m: (prepend_prompt(p, e, m)[0], prepend_prompt(p, e, m)[1].float()))


def test_stub_says_not_written(capsys):
    assert check_prepend_prompt(my_prepend_prompt) is False
    assert "✗ my_prepend_prompt is not written yet" in capsys.readouterr().out


def _ones(m, n):
    return torch.ones(m.shape[0], n, dtype=m.dtype)


def _tile(p, e):
    return p.unsqueeze(0).expand(e.shape[0], -1, -1)


@pytest.mark.parametrize(
    ("wrong", "match"),
    [
        (lambda p, e, m: (e, m), "the prompt is missing"),
        (lambda p, e, m: (torch.cat([e, _tile(p, e)], 1), torch.cat([m, _ones(m, p.shape[0])], 1)),
         "the prompt is after the tokens"),
        (lambda p, e, m: (torch.cat([_tile(p, e), e], 1), m), "mask still has shape"),
        (lambda p, e, m: (torch.cat([_tile(p, e), e], 1), torch.cat([0 * _ones(m, p.shape[0]), m], 1)),
         "virtual tokens are masked out"),
        (lambda p, e, m: (torch.cat([_tile(p, e), e], 1), torch.cat([m, _ones(m, p.shape[0])], 1)),
         "the ones are after the mask"),
        (lambda p, e, m: (torch.cat([_tile(p, e), e], 1), torch.ones(m.shape[0], p.shape[0] + m.shape[1])),
         "keep the padding zeros"),
        (lambda p, e, m: (torch.cat([_tile(p.detach(), e), e], 1), torch.cat([_ones(m, p.shape[0]), m], 1)),
         "no gradient can reach the prompt"),
        (lambda p, e, m: (torch.cat([_tile(torch.randn_like(p), e), e], 1), torch.cat([_ones(m, p.shape[0]), m], 1)),
         "positions 0..n-1 are not the prompt"),
        (lambda p, e, m: torch.cat([_tile(p, e), e], 1), "return a pair"),
    ],
)
def test_typical_mistakes_are_named(wrong, match):
    with pytest.raises(AssertionError, match=match):
        check_prepend_prompt(wrong)


def test_batch_dimension_is_named():
    # cat along dim 0 only works when the shapes allow it: prompt as (n, T, h) would; here it raises in the student
    # code or gives a wrong shape, and the wrong shape is named
    def along_batch(p, e, m):
        return torch.cat([p.unsqueeze(1).expand(-1, e.shape[1], -1), e], 0), m

    with pytest.raises(AssertionError, match="along the batch"):
        check_prepend_prompt(along_batch)


def test_student_errors_propagate_with_a_note():
    def broken(p, e, m):
        return torch.cat([p, e], dim=1), m  # (n, h) and (B, T, h): torch raises

    with pytest.raises(RuntimeError) as info:
        check_prepend_prompt(broken)
    assert "raised inside broken" in "".join(getattr(info.value, "__notes__", []))
