"""Tests for lab_utils.checks.qlora (the memory bill of QLoRA training): the reference passes, each typical mistake
fails with a message naming it, the stub says "not written yet"."""

import pytest

from lab_utils.checks import check_qlora_bytes
from lab_utils.checks.qlora import qlora_bytes


def stub(n_quantized, n_other, n_trained, **kwargs):
    raise NotImplementedError  # your code here


def test_stub_says_not_written(capsys):
    assert check_qlora_bytes(stub) is False
    assert "✗ stub is not written yet" in capsys.readouterr().out


def test_reference_passes(capsys):
    assert check_qlora_bytes(qlora_bytes) is True
    assert "✓ QLoRA's memory bill right" in capsys.readouterr().out


def test_reference_matches_the_lecture_bits():
    assert qlora_bytes(64 * 256, 0, 0) * 8 / (64 * 256) == pytest.approx(4 + 8 / 64 + 32 / (64 * 256))
    assert qlora_bytes(64, 0, 0, double_quant=False) * 8 / 64 == pytest.approx(4.5)
    assert qlora_bytes(0, 10, 3, other_bytes=4) == 10 * 4 + 3 * 16


def test_another_correct_form_passes():
    def with_blocks(n_quantized, n_other, n_trained, *, double_quant=True, blocksize=64, nested_blocksize=256,
                    other_bytes=2):
        blocks = -(-n_quantized // blocksize)  # ceil: the last block is padded
        if double_quant:
            constants = blocks * 1 + -(-blocks // nested_blocksize) * 4
        else:
            constants = blocks * 4
        return n_quantized // 2 + constants + n_other * other_bytes + n_trained * (4 + 4 + 4 + 4)

    assert check_qlora_bytes(with_blocks) is True


def wrong(bits=None, trained=16, divide=8, other_quantized=False, all_bits=False):
    def fn(nq, no, nt, *, double_quant=True, blocksize=64, nested_blocksize=256, other_bytes=2):
        b = bits(double_quant, blocksize, nested_blocksize) if bits else (
            4 + 8 / blocksize + 32 / (blocksize * nested_blocksize) if double_quant else 4 + 32 / blocksize)
        if other_quantized:
            return (nq + no) * b / divide + nt * trained
        total = nq * b / divide + no * other_bytes + nt * trained
        return total * 8 if all_bits else total
    return fn


@pytest.mark.parametrize(
    ("student", "match"),
    [
        (wrong(bits=lambda dq, bs, nbs: 4.0), "also stores its absmax constant"),
        (wrong(bits=lambda dq, bs, nbs: 4 + 32 / bs), "with double_quant=True the absmax constants are 8-bit"),
        (wrong(bits=lambda dq, bs, nbs: 4 + 8 / bs + 32 / (bs * nbs)), "with double_quant=False the absmax constants"),
        (wrong(bits=lambda dq, bs, nbs: 4 + 8 / bs if dq else 4 + 32 / bs), "need their own fp32 constant"),
        (wrong(divide=1), "divide n_quantized \\* bits per weight by 8"),
        (wrong(all_bits=True), "whole bill in bits"),
        (wrong(trained=4), "add its gradient"),
        (wrong(trained=12), "12 bytes per trained parameter"),
        (wrong(trained=8), "not 16-bit"),
        (wrong(other_quantized=True), "only the linear layers are quantized"),
    ],
)
def test_mistakes_are_named(student, match):
    with pytest.raises(AssertionError, match=match):
        check_qlora_bytes(student)


def test_forgotten_parts_and_bad_returns_are_named():
    def no_other(nq, no, nt, **kw):
        return qlora_bytes(nq, 0, nt, **kw)

    def no_trained(nq, no, nt, **kw):
        return qlora_bytes(nq, no, 0, **kw)

    def ignores_other_bytes(nq, no, nt, *, other_bytes=2, **kw):
        return qlora_bytes(nq, no, nt, **kw)

    with pytest.raises(AssertionError, match="other frozen weights .* count too"):
        check_qlora_bytes(no_other)
    with pytest.raises(AssertionError, match="trained parameters count too"):
        check_qlora_bytes(no_trained)
    with pytest.raises(AssertionError, match="use other_bytes"):
        check_qlora_bytes(ignores_other_bytes)
    with pytest.raises(AssertionError, match="return one number"):
        check_qlora_bytes(lambda nq, no, nt, **kw: "many")
    with pytest.raises(AssertionError, match="expected"):
        check_qlora_bytes(lambda nq, no, nt, **kw: 1.0)
