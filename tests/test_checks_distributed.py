"""Tests for lab_utils.checks.distributed: check_rank_memory, check_scale_to_gpus."""

import math

import pytest

from lab_utils.checks.distributed import check_rank_memory, check_scale_to_gpus

SHARDED = {"none": (), "zero1": ("state",), "zero2": ("state", "grads"), "zero3": ("state", "grads", "weights")}


def rank_memory(n_params, world_size, stage, *, split=lambda n, w: -(-n // w), state_bytes=8, sharded=None):
    """The reference, with knobs to make each typical mistake."""
    parts = SHARDED[stage] if sharded is None else sharded(stage)
    per = {"weights": 4, "grads": 4, "state": state_bytes}
    return sum(b * (split(n_params, world_size) if c in parts else n_params) for c, b in per.items())


def my_rank_memory(n_params, world_size, stage):
    raise NotImplementedError  # your code here


def scale_to_gpus(batch_per_gpu, accumulation, lr, n_gpus):
    return batch_per_gpu * accumulation * n_gpus, lr * n_gpus


def test_accepts_the_reference(capsys):
    assert check_rank_memory(rank_memory) is True
    assert check_rank_memory(lambda n, w, s: float(rank_memory(n, w, s))) is True  # a whole float is fine
    assert check_scale_to_gpus(scale_to_gpus) is True
    assert check_scale_to_gpus(lambda b, a, lr, n: [b * a * n, lr * n]) is True
    out = capsys.readouterr().out
    assert out.count("✓ rank_memory") == 2 and out.count("✓ scale_to_gpus") == 2


def test_stubs_say_not_written(capsys):
    assert check_rank_memory(my_rank_memory) is False
    assert "✗ my_rank_memory is not written yet" in capsys.readouterr().out


@pytest.mark.parametrize(("fn", "match"), [
    (lambda n, w, s: rank_memory(n, w, s, sharded=lambda s: ("state", "grads", "weights")),
     r"'none'\) returned .*DDP keeps a full copy"),
    (lambda n, w, s: rank_memory(n, w, s, sharded=lambda s: () if s == "none" else ("state", "grads", "weights")),
     r"'zero1'\) returned .*does not split everything"),
    (lambda n, w, s: rank_memory(n, w, s, sharded=lambda s: ()), r"'zero1'\) .*divide them by world_size"),
    (lambda n, w, s: rank_memory(n, w, s, split=lambda n, w: n // w), "round up, not down"),
    (lambda n, w, s: rank_memory(n, w, s, split=lambda n, w: n / w), "whole elements"),
    (lambda n, w, s: rank_memory(n, w, s, state_bytes=4), "two moments"),
    (lambda n, w, s: rank_memory(n, w, s, sharded=lambda s: {"zero2": ("grads",), "zero3": ("weights",)}.get(
        s, SHARDED[s])), r"'zero2'\) .*cumulative"),
    (lambda n, w, s: rank_memory(n, w, s, sharded=lambda s: ("grads",) if s == "zero1" else SHARDED[s]),
     "stage 1 splits the optimizer state, not the gradients"),
    (lambda n, w, s: rank_memory(n, w, s) + 1, r"expected [\d,]+: 4 bytes of weights"),
    (lambda n, w, s: f"{rank_memory(n, w, s)} B", "return one number"),
])
def test_rank_memory_names_typical_mistakes(fn, match):
    with pytest.raises(AssertionError, match=match):
        check_rank_memory(fn)


@pytest.mark.parametrize(("fn", "match"), [
    (lambda b, a, lr, n: (b * n, lr * n), "counts the accumulation steps"),
    (lambda b, a, lr, n: (b * a, lr * n), "multiply by n_gpus"),
    (lambda b, a, lr, n: (b * a * n, lr), "linear scaling rule multiplies the learning rate"),
    (lambda b, a, lr, n: (b * a * n, lr * math.sqrt(n)), "square-root scaling"),
    (lambda b, a, lr, n: (b * a * n, lr / n), "up with the batch, not down"),
    (lambda b, a, lr, n: (b * a * n, lr * b * a * n), "not by the global batch itself"),
    (lambda b, a, lr, n: b * a * n, "return two numbers"),
    (lambda b, a, lr, n: (b * a * n, lr * n, 0), "return two numbers"),
])
def test_scale_to_gpus_names_typical_mistakes(fn, match):
    with pytest.raises(AssertionError, match=match):
        check_scale_to_gpus(fn)
