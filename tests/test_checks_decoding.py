"""Tests for lab_utils.checks.decoding (the memory roofline of a decode step): the reference passes, another correct
form passes, each typical mistake fails with a message naming it, the stub says "not written yet"."""

import pytest

from lab_utils.checks import check_memory_roofline
from lab_utils.checks.decoding import memory_roofline_tokens_per_s
from lab_utils.decoding import decode_roofline


def stub(*, weight_bytes, cache_bytes_per_token, context, batch, bandwidth):
    raise NotImplementedError  # your code here


def test_stub_says_not_written(capsys):
    assert check_memory_roofline(stub) is False
    assert "✗ stub is not written yet" in capsys.readouterr().out


def test_reference_passes(capsys):
    assert check_memory_roofline(memory_roofline_tokens_per_s) is True
    assert "✓ memory roofline right" in capsys.readouterr().out


def test_reference_agrees_with_the_library_roofline_when_memory_bound():
    kwargs = {"weight_bytes": 2e8, "cache_bytes_per_token": 2e4, "context": 100, "batch": 4, "bandwidth": 1e12}
    bound = decode_roofline(**kwargs, flops_per_token=0.0, peak_flops=1.0)
    assert bound.bound == "memory"
    assert bound.tokens_per_s == pytest.approx(memory_roofline_tokens_per_s(**kwargs))


def test_another_correct_form_passes():
    def per_step(*, weight_bytes, cache_bytes_per_token, context, batch, bandwidth):
        seconds = weight_bytes / bandwidth + batch * context * cache_bytes_per_token / bandwidth
        return batch / seconds

    assert check_memory_roofline(per_step) is True


def student(form):
    def fn(*, weight_bytes, cache_bytes_per_token, context, batch, bandwidth):
        return form(weight_bytes, cache_bytes_per_token, context, batch, bandwidth)
    return fn


@pytest.mark.parametrize(("form", "match"), [
    (lambda w, c, t, b, bw: bw / (w + b * t * c), "steps per second"),
    (lambda w, c, t, b, bw: (w + b * t * c) / (b * bw), "seconds per token"),
    (lambda w, c, t, b, bw: b * bw / w, "the KV cache is read too"),
    (lambda w, c, t, b, bw: b * bw / (w + t * c), "every sequence has its own cache"),
    (lambda w, c, t, b, bw: b * bw / (b * w + b * t * c), "read once per step and shared"),
    (lambda w, c, t, b, bw: b * bw / (8 * (w + b * t * c)), "no factor 8"),
    (lambda w, c, t, b, bw: b * bw / (w + 2 * b * t * c), "do not double it"),
    (lambda w, c, t, b, bw: b * bw / (w + b * t * c / 2), "do not halve it"),
    (lambda w, c, t, b, bw: 0.5 * b * bw / (w + b * t * c), "batch \\* bandwidth / \\(weight_bytes"),
])
def test_typical_mistakes_are_named(form, match):
    with pytest.raises(AssertionError, match=match):
        check_memory_roofline(student(form))


def test_a_non_number_is_refused():
    with pytest.raises(AssertionError, match="return one number"):
        check_memory_roofline(student(lambda w, c, t, b, bw: "fast"))
