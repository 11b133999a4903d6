"""Tests for lab_utils.checks.prompting: the reference answers pass, each typical mistake fails with a message
naming it, the stubs say "not written yet"."""

import re

import pytest

from lab_utils.checks import check_extract_answer, check_label_probs
from lab_utils.checks.prompting import _ANSWERS
from lab_utils.prompting import label_probs_from_logits
from lab_utils.word_problems import extract_answer


# --- label probabilities ----------------------------------------------------------------------------------------------
def label_probs(logits, attention_mask, label_ids):
    last = attention_mask.sum(dim=1) - 1
    rows = logits[range(len(last)), last]  # (B, V)
    return rows[:, label_ids].softmax(dim=-1)


def my_label_probs(logits, attention_mask, label_ids):
    raise NotImplementedError  # your code here


def test_label_probs_reference_passes(capsys):
    assert check_label_probs(label_probs) is True
    assert check_label_probs(label_probs_from_logits) is True
    assert "✓ label probabilities" in capsys.readouterr().out


def test_label_probs_renormalising_by_hand_passes():
    def by_division(logits, attention_mask, label_ids):
        last = attention_mask.sum(dim=1) - 1
        p = logits[range(len(last)), last].softmax(-1)[:, label_ids]
        return p / p.sum(-1, keepdim=True)

    assert check_label_probs(by_division) is True


def test_label_probs_stub_says_not_written(capsys):
    assert check_label_probs(my_label_probs) is False
    assert "✗ my_label_probs is not written yet" in capsys.readouterr().out


def _last(logits, mask):
    return logits[range(logits.shape[0]), mask.sum(1) - 1]


@pytest.mark.parametrize(("wrong", "match"), [
    (lambda lg, m, ids: lg[:, -1, ids].softmax(-1), "position -1"),
    (lambda lg, m, ids: lg[range(lg.shape[0]), (m.sum(1)).clamp(max=lg.shape[1] - 1)][:, ids].softmax(-1),
     "one position too far"),
    (lambda lg, m, ids: lg[:, 0, ids].softmax(-1), "first token"),
    (lambda lg, m, ids: _last(lg, m).softmax(-1)[:, ids], "whole vocabulary"),
    (lambda lg, m, ids: _last(lg, m)[:, ids].softmax(0), "along the batch"),
    (lambda lg, m, ids: _last(lg, m)[:, ids], "logits, not probabilities"),
    (lambda lg, m, ids: _last(lg, m)[:, sorted(ids)].softmax(-1), "sorted order"),
    (lambda lg, m, ids: _last(lg, m).softmax(-1), "one column per label id, not per vocabulary"),
    (lambda lg, m, ids: _last(lg, m)[:, ids].softmax(-1).tolist(), "returned a list"),
    (lambda lg, m, ids: 0.5 * _last(lg, m)[:, ids].softmax(-1), "expected"),
])
def test_label_probs_mistakes_named(wrong, match):
    with pytest.raises(AssertionError, match=match):
        check_label_probs(wrong)


# --- extract_answer ---------------------------------------------------------------------------------------------------
_NUM = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def my_extract_answer(text):
    raise NotImplementedError  # your code here


def test_extract_answer_table_is_the_rule():
    assert [extract_answer(text) for text, _, _ in _ANSWERS] == [want for _, want, _ in _ANSWERS]


def test_extract_answer_reference_passes(capsys):
    assert check_extract_answer(extract_answer) is True
    assert "✓ answers read by the rule" in capsys.readouterr().out


def test_extract_answer_stub_says_not_written(capsys):
    assert check_extract_answer(my_extract_answer) is False
    assert "✗ my_extract_answer is not written yet" in capsys.readouterr().out


def _number(s):
    s = s.replace(",", "")
    return float(s) if "." in s else int(s)


def _head(text):
    return re.split(r"\n\s*\n|Q:", text)[0]


def first_number(text):
    found = _NUM.findall(_head(text))
    return _number(found[0]) if found else None


def no_cut(text):
    found = _NUM.findall(text)
    return _number(found[-1].rstrip(",")) if found else None


def comma_split(text):
    found = re.findall(r"-?\d+(?:\.\d+)?", _head(text))
    return _number(found[-1]) if found else None


def no_decimal(text):
    found = re.findall(r"-?\d+", _head(text))
    return int(found[-1]) if found else None


def no_minus(text):
    found = re.findall(r"\d[\d,]*(?:\.\d+)?", _head(text))
    return _number(found[-1].rstrip(",")) if found else None


def zero_for_none(text):
    return extract_answer(text) or 0


def as_string(text):
    found = _NUM.findall(_head(text))
    return found[-1] if found else None


@pytest.mark.parametrize(("wrong", "match"), [
    (first_number, "first number"), (no_cut, "new question"), (comma_split, "thousands separator"),
    (no_decimal, "decimal"), (no_minus, "minus sign"), (zero_for_none, "return None"), (as_string, "return a number"),
])
def test_extract_answer_mistakes_named(wrong, match):
    with pytest.raises(AssertionError, match=match):
        check_extract_answer(wrong)
