"""Tests for lab_utils.checks.gptq (one GPTQ / OBS column step): the reference passes, each typical mistake fails
with a message naming it, the stub says "not written yet"."""

import pytest
import torch

from lab_utils.checks import check_quantize_column
from lab_utils.checks.gptq import quantize_column


def stub(W, Hinv, j, step):
    raise NotImplementedError  # your code here


def test_stub_says_not_written(capsys):
    assert check_quantize_column(stub) is False
    assert "✗ stub is not written yet" in capsys.readouterr().out


def test_reference_passes(capsys):
    assert check_quantize_column(quantize_column) is True
    assert "✓ GPTQ step right" in capsys.readouterr().out


def test_another_correct_form_passes():
    def via_loop(W, Hinv, j, step):  # column by column, error as a ratio first
        out = W.clone()
        q = torch.round(W[:, j] / step) * step
        ratio = (W[:, j] - q) / Hinv[j, j]
        out[:, j] = q
        for k in range(j + 1, W.shape[1]):
            out[:, k] = W[:, k] - ratio * Hinv[j, k]
        return out

    assert check_quantize_column(via_loop) is True


def variant(*, divide=True, start=1, sign=-1, use_h=False, round_j=True, in_place=False, ret=True):
    def fn(W, Hinv, j, step):
        M = torch.linalg.inv(Hinv) if use_h else Hinv
        out = W if in_place else W.clone()
        q = step * torch.round(W[:, j] / step)
        err = W[:, j] - q
        upd = torch.outer(err, M[j]) / (M[j, j] if divide else 1.0)
        cols = slice(j + 1, None) if start == 1 else slice(None)
        out[:, cols] += sign * upd[:, cols]
        if round_j:
            out[:, j] = q
        return out if ret else None
    return fn


@pytest.mark.parametrize(
    ("wrong", "match"),
    [
        (variant(divide=False), r"divided by Hinv\[j, j\]"),
        (variant(start=0), "only the later columns"),
        (variant(sign=+1), "sign is flipped"),
        (variant(use_h=True), "with H, not its inverse"),
        (variant(round_j=False), "column j itself is not quantized"),
        (variant(in_place=True), "modified W in place"),
        (variant(ret=False), "returned a NoneType"),
        (lambda W, Hinv, j, step: W.clone(), "left column j unchanged"),
        (lambda W, Hinv, j, step: W[:, :j].clone(), "returned shape"),
    ],
)
def test_typical_mistakes_are_named(wrong, match):
    with pytest.raises(AssertionError, match=match):
        check_quantize_column(wrong)
