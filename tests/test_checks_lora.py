"""Tests for lab_utils.checks.lora (forward, merge, linear_to_lora, rank budget) and feedback.name_mistake: the
reference answers pass, each typical mistake fails with a message naming it, the stubs say "not written yet"."""

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lab_utils.checks import check_linear_to_lora, check_lora_budget, check_lora_forward, check_lora_merge
from lab_utils.checks.feedback import name_mistake
from lab_utils.lora import LoRALinear, lora_parameter_count


# --- feedback.name_mistake --------------------------------------------------------------------------------------------
def test_name_mistake_first_match_in_order_floats_tolerated():
    assert name_mistake(6, {6: "a", 7: "b"}, "rule") == "a"
    assert name_mistake(0.1 + 0.2, [(0.3, "float"), (0.3, "second")], "rule") == "float"  # pairs keep duplicates
    assert name_mistake(8, {6: "a"}, "rule") == "rule"
    assert name_mistake(1_000_001, {1_000_000: "a"}, "rule") == "rule"  # integers stay exact at the default tolerance
    assert name_mistake(1.0000001, {1.0: "a"}, "rule", rel_tol=1e-6) == "a"


# --- forward ----------------------------------------------------------------------------------------------------------
def lora_forward(layer, x):
    return layer.base_layer(x) + layer.lora_B(layer.lora_A(layer.lora_dropout(x))) * layer.scaling


def my_lora_forward(layer, x):
    raise NotImplementedError  # your code here


def test_forward_reference_passes(capsys):
    assert check_lora_forward(lora_forward) is True
    assert "✓ LoRA forward right" in capsys.readouterr().out


def test_forward_with_weights_passes():
    def with_weights(layer, x):
        d = layer.lora_dropout(x)
        return F.linear(x, layer.base_layer.weight, layer.base_layer.bias) + layer.scaling * (
            d @ layer.lora_A.weight.T @ layer.lora_B.weight.T)

    assert check_lora_forward(with_weights) is True


def test_forward_stub_says_not_written(capsys):
    assert check_lora_forward(my_lora_forward) is False
    assert "✗ my_lora_forward is not written yet" in capsys.readouterr().out


def low(layer, x):
    return layer.lora_B(layer.lora_A(layer.lora_dropout(x)))


@pytest.mark.parametrize(
    ("wrong", "match"),
    [
        (lambda layer, x: low(layer, x) * layer.scaling, "frozen path is missing"),
        (lambda layer, x: x @ layer.base_layer.weight.T + low(layer, x) * layer.scaling, "bias is missing"),
        (lambda layer, x: lora_forward(layer, x) + layer.base_layer.bias, "bias is added twice"),
        (lambda layer, x: layer.base_layer(x) + low(layer, x), "not scaled"),
        (lambda layer, x: layer.base_layer(x) + low(layer, x) * layer.r / layer.lora_alpha, "not r / lora_alpha"),
        (lambda layer, x: layer.base_layer(x) + low(layer, x) * layer.lora_alpha, "not lora_alpha alone"),
        (lambda layer, x: layer(x), r"called layer\(x\), the library's forward"),
        (lambda layer, x: lora_forward(layer, x).detach(), "without a gradient"),
        (lambda layer, x: lora_forward(layer, x)[..., :-1], r"returned shape \(3, 3\); expected \(3, 4\)"),
        (lambda layer, x: lora_forward(layer, x).tolist(), "returned a list"),
        (lambda layer, x: layer.base_layer(x) + layer.scaling * layer.lora_B(x @ layer.lora_A.weight.T.detach()),
         "no gradient reaches lora_A and lora_B"),
    ],
)
def test_forward_mistakes_are_named(wrong, match):
    with pytest.raises(AssertionError, match=match):
        check_lora_forward(wrong)


def test_forward_transposed_update():
    def transposed(layer, x):  # x @ B @ A: fits only a square layer
        return layer.base_layer(x) + layer.scaling * (x @ layer.lora_B.weight @ layer.lora_A.weight)

    with pytest.raises(RuntimeError, match="cannot be multiplied"):  # the student's own error on the 6 -> 4 layer
        check_lora_forward(transposed)

    def transposed_if_square(layer, x):
        return lora_forward(layer, x) if layer.in_features != layer.out_features else transposed(layer, x)

    with pytest.raises(AssertionError, match=r"in=5, out=5.*applied transposed \(x @ B @ A\)"):
        check_lora_forward(transposed_if_square)


def test_forward_identity_at_init_would_not_tell():
    # Non-vacuity of the check's layers: with B = 0 (a fresh LoRALinear) a forgotten scaling would pass unseen.
    layer = LoRALinear(nn.Linear(6, 4), r=2, lora_alpha=8.0)
    x = torch.randn(3, 6)
    torch.testing.assert_close(layer.base_layer(x) + low(layer, x), lora_forward(layer, x))
    with pytest.raises(AssertionError, match="not scaled"):
        check_lora_forward(lambda layer, x: layer.base_layer(x) + low(layer, x))


@pytest.mark.parametrize(
    ("wrong", "match"),
    [
        (lambda layer, x: layer.base_layer(x) + layer.lora_B(layer.lora_A(x)) * layer.scaling,
         "train mode.*: layer.lora_dropout is missing"),
        (lambda layer, x: (lambda d: layer.base_layer(d) + layer.lora_B(layer.lora_A(d)) * layer.scaling)(
            layer.lora_dropout(x)), "also hit the frozen path"),
        (lambda layer, x: layer.base_layer(x) + layer.lora_dropout(layer.lora_B(layer.lora_A(x)) * layer.scaling),
         "applied to the LoRA branch's output"),
        (lambda layer, x: layer.lora_dropout(layer.base_layer(x) + layer.lora_B(layer.lora_A(x)) * layer.scaling),
         "applied to the whole output"),
        (lambda layer, x: layer.base_layer(x) + layer.scaling * layer.lora_B(layer.lora_A(
            F.dropout(x, getattr(layer.lora_dropout, "p", 0.0)))), "eval mode.*F.dropout"),
    ],
)
def test_forward_dropout_mistakes_are_named(wrong, match):
    with pytest.raises(AssertionError, match=match):
        check_lora_forward(wrong)


def test_forward_check_keeps_global_rngs():
    torch.manual_seed(5), random.seed(5), np.random.seed(5)
    expected = torch.rand(3), random.random(), np.random.rand()
    torch.manual_seed(5), random.seed(5), np.random.seed(5)
    assert check_lora_forward(lora_forward)
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]
    assert np.random.rand() == expected[2]


# --- merge ------------------------------------------------------------------------------------------------------------
def merged_weight(layer):
    return layer.base_layer.weight + layer.scaling * layer.lora_B.weight @ layer.lora_A.weight


def my_merged_weight(layer):
    raise NotImplementedError  # your code here


def test_merge_reference_and_library_pass(capsys):
    assert check_lora_merge(merged_weight) is True
    assert check_lora_merge(lambda layer: layer.base_layer.weight + layer.get_delta_weight()) is True
    assert capsys.readouterr().out.count("✓ merged weight right") == 2


def test_merge_stub_says_not_written(capsys):
    assert check_lora_merge(my_merged_weight) is False
    assert "✗ my_merged_weight is not written yet" in capsys.readouterr().out


def merge_in_place(layer):
    layer.merge()
    return layer.base_layer.weight


def add_into_weight(layer):
    w = layer.base_layer.weight.data
    w += layer.scaling * layer.lora_B.weight.data @ layer.lora_A.weight.data
    return w


@pytest.mark.parametrize(
    ("wrong", "match"),
    [
        (merge_in_place, r"changed the layer \(base_layer.weight\)"),
        (add_into_weight, r"changed the layer \(base_layer.weight\)"),
        (lambda layer: layer.scaling * layer.lora_B.weight @ layer.lora_A.weight, "frozen weight W is missing"),
        (lambda layer: layer.base_layer.weight + layer.lora_B.weight @ layer.lora_A.weight, "not scaled"),
        (lambda layer: layer.base_layer.weight + layer.r / layer.lora_alpha * layer.lora_B.weight @ layer.lora_A.weight,
         "not r / lora_alpha"),
        (lambda layer: merged_weight(layer).T, r"returned shape \(6, 4\), the transpose"),
        (lambda layer: layer.base_layer.weight.T + layer.scaling * layer.lora_A.weight.T @ layer.lora_B.weight.T,
         r"returned shape \(6, 4\), the transpose"),  # W.T + A.T @ B.T: the whole merge transposed
        (lambda layer: layer.base_layer.weight.clone(), "update is missing"),
        (lambda layer: merged_weight(layer) + 1e-3, "merged = W \\+ scaling \\* B @ A"),
    ],
)
def test_merge_mistakes_are_named(wrong, match):
    with pytest.raises(AssertionError, match=match):
        check_lora_merge(wrong)


def test_merge_transposed_update_named_on_the_square_case():
    def transposed_if_square(layer):
        delta = layer.scaling * layer.lora_B.weight @ layer.lora_A.weight
        return layer.base_layer.weight + (delta.T if delta.shape[0] == delta.shape[1] else delta)

    with pytest.raises(AssertionError, match="in=5, out=5.*update is transposed"):
        check_lora_merge(transposed_if_square)


# --- linear_to_lora ---------------------------------------------------------------------------------------------------
def linear_to_lora(linear, r, lora_alpha):
    lora = LoRALinear(nn.Linear(linear.in_features, linear.out_features), r=r, lora_alpha=lora_alpha)
    with torch.no_grad():
        lora.base_layer.weight.copy_(linear.weight)
        lora.base_layer.bias.copy_(linear.bias)
    return lora


def my_linear_to_lora(linear, r, lora_alpha):
    raise NotImplementedError  # your code here


def test_linear_to_lora_reference_passes(capsys):
    assert check_linear_to_lora(linear_to_lora) is True
    assert "✓ linear_to_lora right" in capsys.readouterr().out


def test_linear_to_lora_stub_says_not_written(capsys):
    assert check_linear_to_lora(my_linear_to_lora) is False
    assert "✗ my_linear_to_lora is not written yet" in capsys.readouterr().out


def lecture_erratum(linear, r, lora_alpha):  # the lecture's code on our LoRALinear: the bias lands in .weight
    lora = LoRALinear(nn.Linear(linear.in_features, linear.out_features), r=r, lora_alpha=lora_alpha)
    lora.base_layer.weight.data = linear.weight.data
    lora.base_layer.weight.data = linear.bias.data
    return lora


def weight_only(linear, r, lora_alpha):
    lora = LoRALinear(nn.Linear(linear.in_features, linear.out_features), r=r, lora_alpha=lora_alpha)
    lora.base_layer.weight.data.copy_(linear.weight.data)
    return lora


def bias_only(linear, r, lora_alpha):
    lora = LoRALinear(nn.Linear(linear.in_features, linear.out_features), r=r, lora_alpha=lora_alpha)
    lora.base_layer.bias.data.copy_(linear.bias.data)
    return lora


def random_b(linear, r, lora_alpha):
    lora = linear_to_lora(linear, r, lora_alpha)
    nn.init.normal_(lora.lora_B.weight)
    return lora


def no_alpha(linear, r, lora_alpha):
    lora = LoRALinear(nn.Linear(linear.in_features, linear.out_features), r=r)  # lora_alpha left at its default
    lora.base_layer.load_state_dict(linear.state_dict())
    return lora


def shared_parameters(linear, r, lora_alpha):
    lora = LoRALinear(nn.Linear(linear.in_features, linear.out_features), r=r, lora_alpha=lora_alpha)
    lora.base_layer.weight, lora.base_layer.bias = linear.weight, linear.bias  # trainable Parameters
    return lora


def modifies_input(linear, r, lora_alpha):
    with torch.no_grad():
        linear.bias.zero_()
    return linear_to_lora(linear, r, lora_alpha)


@pytest.mark.parametrize(
    ("wrong", "match"),
    [
        (lecture_erratum, "holds the linear's bias .the lecture's erratum"),
        (weight_only, "base_layer.bias is not the linear's bias .a random one"),
        (bias_only, "base_layer.weight is not the linear's weight"),
        (random_b, "lora_B is not zero"),
        (no_alpha, "scaling is 4, expected lora_alpha / r = 4"),  # alpha 8, r 2: the default 8 hides it...
        (shared_parameters, "the base layer is trainable"),
        (modifies_input, "changed the linear it was given"),
        (lambda linear, r, lora_alpha: linear_to_lora(linear, r + 1, lora_alpha), "built rank 3"),
        (lambda linear, r, lora_alpha: nn.Linear(linear.in_features, linear.out_features), "returned a Linear"),
    ],
)
def test_linear_to_lora_mistakes_are_named(wrong, match):
    if wrong is no_alpha:  # ...on the first case; the second (alpha 6, r 3) exposes it
        match = r"r=3, lora_alpha=6\).*scaling is 2.66667, expected lora_alpha / r = 2"
    with pytest.raises(AssertionError, match=match):
        check_linear_to_lora(wrong)


def test_wrapping_the_given_linear_is_accepted():
    # PEFT's way (wrap the module itself) is fine too: the result computes what the linear did.
    assert check_linear_to_lora(lambda linear, r, lora_alpha: LoRALinear(linear, r=r, lora_alpha=lora_alpha))


# --- largest rank under a budget --------------------------------------------------------------------------------------
def max_rank(budget, n_layers, shapes):
    per_rank = n_layers * sum(n_in + n_out for n_in, n_out in shapes.values())
    return budget // per_rank


def my_max_rank(budget, n_layers, shapes):
    raise NotImplementedError  # your code here


def test_budget_reference_and_search_pass(capsys):
    def by_search(budget, n_layers, shapes):
        r = 0
        while lora_parameter_count(shapes, r + 1, n_layers) <= budget:
            r += 1
        return r

    assert check_lora_budget(max_rank) is True
    assert check_lora_budget(by_search) is True
    assert check_lora_budget(lambda *a: np.int64(max_rank(*a))) is True
    assert capsys.readouterr().out.count("✓ largest rank") == 3


def test_budget_stub_says_not_written(capsys):
    assert check_lora_budget(my_max_rank) is False
    assert "✗ my_max_rank is not written yet" in capsys.readouterr().out


def per(shapes, f):
    return sum(f(i, o) for i, o in shapes.values())


@pytest.mark.parametrize(
    ("wrong", "match"),
    [
        (lambda b, n, s: b // per(s, lambda i, o: i + o), "forgot n_layers"),
        (lambda b, n, s: b // (n * per(s, lambda i, o: i * o)), r"r \* in \* out"),
        (lambda b, n, s: b // (n * per(s, lambda i, o: i)), r"counted A \(r x in\) only"),
        (lambda b, n, s: b // (n * per(s, lambda i, o: o)), r"counted B \(out x r\) only"),
        (lambda b, n, s: math.ceil(b / (n * per(s, lambda i, o: i + o))), r"returned 63; expected 62: you rounded up"),
        (lambda b, n, s: round(b / (n * per(s, lambda i, o: i + o))), r"returned 11.*rounded up or to the nearest"),
        (lambda b, n, s: b / (n * per(s, lambda i, o: i + o)), r"returned 62\.00.*; expected 62: the largest r"),
        (lambda b, n, s: float(max_rank(b, n, s)), r"returned 62\.0 \(a float\)"),
        (lambda b, n, s: max_rank(b, n, s) or -1, "nothing fits: return 0"),
        (lambda b, n, s: max_rank(b, n, s) - 1, "largest r with"),
        (lambda b, n, s: str(max_rank(b, n, s)), "returned a str"),
    ],
)
def test_budget_mistakes_are_named(wrong, match):
    with pytest.raises(AssertionError, match=match):
        check_lora_budget(wrong)


def test_budget_exact_fit_catches_strict_inequality():
    def strict(budget, n_layers, shapes):  # "< budget" instead of "<= budget": off by one at an exact fit only
        per_rank = n_layers * per(shapes, lambda i, o: i + o)
        return (budget - 1) // per_rank

    with pytest.raises(AssertionError, match=r"36_864.*returned 3; expected 4"):
        check_lora_budget(strict)
