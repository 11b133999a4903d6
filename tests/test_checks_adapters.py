"""Tests for lab_utils.checks.adapters: check_adapter_params accepts Houlsby's count (two adapters per layer, with
biases) and names the typical miscounts, the lecture's L * k * n * 2 first."""

import pytest
import torch

from lab_utils.adapters import BottleneckAdapter
from lab_utils.checks import check_adapter_params


def adapter_params(n_layers, hidden_size, bottleneck):
    n, k = hidden_size, bottleneck
    return n_layers * 2 * (n * k + k + k * n + n)  # W_d and its bias, W_u and its bias; two per layer


def my_adapter_params(n_layers, hidden_size, bottleneck):
    raise NotImplementedError  # your code here


def test_reference_passes(capsys):
    assert check_adapter_params(adapter_params) is True
    assert "✓ adapter parameter counts right" in capsys.readouterr().out


def test_counting_the_real_module_passes():
    def counted(n_layers, hidden_size, bottleneck):
        adapter = BottleneckAdapter(hidden_size, bottleneck)
        return torch.tensor(2 * n_layers * sum(p.numel() for p in adapter.parameters()))  # a 0-d tensor is fine

    assert check_adapter_params(counted) is True


def test_stub_says_not_written(capsys):
    assert check_adapter_params(my_adapter_params) is False
    assert "✗ my_adapter_params is not written yet" in capsys.readouterr().out


def test_the_lectures_bert_base_number():
    # The lecture's 12 x 64 x 768 x 2 = 1,179,648 is what the check calls its formula, on its first size
    with pytest.raises(AssertionError, match=r"n_layers=12, hidden_size=768, bottleneck=64\) returned 1,179,648; "
                                             r"Houlsby adapters add 2,379,264: that is the lecture's"):
        check_adapter_params(lambda L, n, k: L * k * n * 2)


@pytest.mark.parametrize(
    ("wrong", "match"),
    [
        (lambda L, n, k: 2 * L * 2 * n * k, "biases are missing"),
        (lambda L, n, k: L * (2 * n * k + n + k), "one adapter per layer"),
        (lambda L, n, k: 2 * L * (2 * n * k + 2 * k), "not k each"),
        (lambda L, n, k: 2 * L * (2 * n * k + 2 * n), "not n each"),
        (lambda L, n, k: 2 * L * (2 * n * k + n + k + 2 * n), "LayerNorm"),
        (lambda L, n, k: 2 * (2 * n * k + n + k), "adapters of one layer: multiply by n_layers"),
        (lambda L, n, k: adapter_params(L, n, k) + 1, r"n_layers \* 2 adapters \* \(2 n k weights \+ k \+ n biases\)"),
        (lambda L, n, k: f"{adapter_params(L, n, k):,}", "returned a str"),
    ],
)
def test_typical_mistakes_are_named(wrong, match):
    with pytest.raises(AssertionError, match=match):
        check_adapter_params(wrong)
