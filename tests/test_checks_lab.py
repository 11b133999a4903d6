"""Tests for lab_utils.checks.lab (the lab "LoRA by hand"): the reference answers pass, each typical mistake fails
with a message naming it (B randomly initialised, missing scaling, base weights left trainable, bias dropped, ...),
the stubs say "not written yet". The lab's fixed linear_to_lora is checked by check_linear_to_lora, whose
rejection of the lecture's "bias copied into the weight" is also proven here on the lab's solution."""

import pytest
import torch
from torch import nn

from lab_utils.adapters import BottleneckAdapter
from lab_utils.checks import check_adapter_module, check_linear_to_lora, check_lora_module, check_trainable
from lab_utils.lora import LoRALinear


# --- the LoRA layer ---------------------------------------------------------------------------------------------------
class RefLoRA(nn.Module):
    def __init__(self, in_features, out_features, r, lora_alpha, *, zero_b=True, scale=True, bias=True,
                 freeze=True, zero_a=False, use_bias=True):
        super().__init__()
        self.base_layer = nn.Linear(in_features, out_features, bias=bias)
        self.lora_A = nn.Linear(in_features, r, bias=False)
        self.lora_B = nn.Linear(r, out_features, bias=False)
        if zero_b:
            nn.init.zeros_(self.lora_B.weight)
        if zero_a:
            nn.init.zeros_(self.lora_A.weight)
        self.base_layer.requires_grad_(not freeze)
        self.scaling = lora_alpha / r if scale else 1.0
        self.use_bias = use_bias

    def forward(self, x):
        base = self.base_layer(x) if self.use_bias else x @ self.base_layer.weight.T
        return base + self.scaling * self.lora_B(self.lora_A(x))


class MyLoRALinear(nn.Module):
    def __init__(self, in_features, out_features, r, lora_alpha):
        raise NotImplementedError  # your code here


def test_lora_module_reference_passes(capsys):
    assert check_lora_module(RefLoRA) is True
    assert "✓ LoRA layer right" in capsys.readouterr().out


def test_lora_module_library_layer_passes():
    # lab_utils' LoRALinear wrapped in the exercise's constructor: the same semantics.
    assert check_lora_module(lambda n_in, n_out, r, a: LoRALinear(nn.Linear(n_in, n_out), r=r, lora_alpha=a))


def test_lora_module_stub_says_not_written(capsys):
    assert check_lora_module(MyLoRALinear) is False
    assert "✗ MyLoRALinear is not written yet" in capsys.readouterr().out


class Inverted(RefLoRA):
    def __init__(self, n_in, n_out, r, a):
        super().__init__(n_in, n_out, r, a)
        self.scaling = r / a


class SwappedA(RefLoRA):
    def __init__(self, n_in, n_out, r, a):
        super().__init__(n_in, n_out, r, a)
        self.lora_A = nn.Linear(r, n_in, bias=False)  # weight (in, r): the transpose


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda *a: RefLoRA(*a, zero_b=False), "B randomly initialised"),
        (lambda *a: RefLoRA(*a, scale=False), "not scaled: multiply"),
        (Inverted, "not r / lora_alpha"),
        (lambda *a: RefLoRA(*a, freeze=False), "the base layer is trainable"),
        (lambda *a: RefLoRA(*a, bias=False), "base_layer has no bias"),
        (lambda *a: RefLoRA(*a, use_bias=False), "bias is missing from the output"),
        (lambda *a: RefLoRA(*a, zero_a=True), "lora_A is zero too"),
        (SwappedA, r"lora_A.weight has shape \(6, 2\); expected \(2, 6\) \(transposed"),
    ],
)
def test_lora_module_mistakes_are_named(make, match):
    with pytest.raises(AssertionError, match=match):
        check_lora_module(make)


def test_lora_module_forgotten_scaling_needs_a_nonzero_b():
    # Non-vacuity: at initialisation (B = 0) the unscaled layer equals the reference; only the check's random B tells.
    ref, wrong = RefLoRA(6, 4, 2, 8.0), RefLoRA(6, 4, 2, 8.0, scale=False)
    wrong.load_state_dict(ref.state_dict())
    x = torch.randn(3, 6)
    torch.testing.assert_close(ref(x), wrong(x))
    with pytest.raises(AssertionError, match="not scaled"):
        check_lora_module(lambda *a: RefLoRA(*a, scale=False))


def test_lora_module_lecture_class_fails_on_b():
    class Lecture(nn.Module):  # the lecture's module, with PEFT's attribute names
        def __init__(self, in_dim, out_dim, rank, lora_alpha):
            super().__init__()
            self.base_layer = nn.Linear(in_dim, out_dim, bias=True)
            self.lora_A = nn.Linear(in_dim, rank, bias=False)
            self.lora_B = nn.Linear(rank, out_dim, bias=False)
            self.base_layer.weight.requires_grad = False  # the bias stays trainable

        def forward(self, x):
            return self.base_layer(x) + self.lora_B(self.lora_A(x))

    with pytest.raises(AssertionError, match="the base layer is trainable"):
        check_lora_module(Lecture)


# --- linear_to_lora, as the lab's solution writes it ------------------------------------------------------------------
def lab_linear_to_lora(linear, r, lora_alpha, *, lecture_bug=False):
    lora = LoRALinear(nn.Linear(linear.in_features, linear.out_features), r=r, lora_alpha=lora_alpha)
    with torch.no_grad():
        lora.base_layer.weight.copy_(linear.weight)
        if lecture_bug:
            lora.base_layer.weight.data = linear.bias.data.clone()
        else:
            lora.base_layer.bias.copy_(linear.bias)
    return lora


def test_linear_to_lora_lab_solution_passes_and_lecture_bug_fails():
    assert check_linear_to_lora(lab_linear_to_lora)
    with pytest.raises(AssertionError, match="bias .the lecture's erratum"):
        check_linear_to_lora(lambda lin, r, a: lab_linear_to_lora(lin, r, a, lecture_bug=True))


# --- trainable parameters ---------------------------------------------------------------------------------------------
def set_trainable(model):
    model.requires_grad_(False)
    for name, p in model.named_parameters():
        if ".lora_A." in name or ".lora_B." in name or name.startswith("classifier."):
            p.requires_grad_(True)


def my_set_trainable(model):
    raise NotImplementedError  # your code here


def test_trainable_reference_passes(capsys):
    assert check_trainable(set_trainable) is True
    assert check_trainable(lambda m: set_trainable(m) or m) is True  # returning the model is fine too
    assert capsys.readouterr().out.count("✓ trainable parameters right") == 2


def test_trainable_stub_says_not_written(capsys):
    assert check_trainable(my_set_trainable) is False
    assert "✗ my_set_trainable is not written yet" in capsys.readouterr().out


def lecture_rule(model):  # the lecture's loop, over model.bert only
    for name, p in model.bert.named_parameters():
        p.requires_grad = "lora" in name


def lora_only_on(model):  # turns LoRA on, freezes nothing
    for name, p in model.named_parameters():
        if "lora" in name:
            p.requires_grad_(True)


def lora_everywhere(model):  # "lora" in the full name, classifier included in the freeze
    for name, p in model.named_parameters():
        p.requires_grad_("lora" in name)


def unfreezes_base_layer(model):
    set_trainable(model)
    for name, p in model.named_parameters():
        if ".base_layer." in name:
            p.requires_grad_(True)


def reinitialises(model):
    set_trainable(model)
    nn.init.zeros_(model.classifier.weight)


def freezes_lora(model):
    model.requires_grad_(False)
    model.classifier.requires_grad_(True)


@pytest.mark.parametrize(
    ("wrong", "match"),
    [
        (lecture_rule, r"requires_grad=False: the classifier is frozen"),
        (lora_only_on, r"requires_grad=True: pretrained weights are left trainable \(bert.embeddings"),
        (lora_everywhere, "the classifier is frozen"),
        (unfreezes_base_layer, "the frozen layer inside each LoRA layer trains"),
        (freezes_lora, "LoRA is frozen"),
        (reinitialises, "changed the values of classifier.weight"),
        (lambda model: None, "pretrained weights are left trainable"),
    ],
)
def test_trainable_mistakes_are_named(wrong, match):
    with pytest.raises(AssertionError, match=match):
        check_trainable(wrong)


# --- the adapter ------------------------------------------------------------------------------------------------------
class RefAdapter(nn.Module):
    def __init__(self, hidden_size, bottleneck, *, act=nn.GELU, residual=True, std=1e-3, bias=True, extra=False):
        super().__init__()
        self.down = nn.Linear(hidden_size, bottleneck, bias=bias)
        self.act = act()
        self.up = nn.Linear(bottleneck, hidden_size, bias=bias)
        self.norm = nn.LayerNorm(hidden_size) if extra else None
        if std is not None:
            for layer in (self.down, self.up):
                nn.init.normal_(layer.weight, std=std)
                if bias:
                    nn.init.zeros_(layer.bias)
        self.residual = residual

    def forward(self, x):
        h = self.up(self.act(self.down(x)))
        return x + h if self.residual else h


class MyAdapter(nn.Module):
    def __init__(self, hidden_size, bottleneck):
        raise NotImplementedError  # your code here


def test_adapter_reference_and_library_pass(capsys):
    assert check_adapter_module(RefAdapter) is True
    assert check_adapter_module(BottleneckAdapter) is True
    assert check_adapter_module(lambda n, k: RefAdapter(n, k, std=1e-4)) is True
    assert capsys.readouterr().out.count("✓ adapter right") == 3


def test_adapter_stub_says_not_written(capsys):
    assert check_adapter_module(MyAdapter) is False
    assert "✗ MyAdapter is not written yet" in capsys.readouterr().out


class ZeroInit(RefAdapter):
    def __init__(self, n, k):
        super().__init__(n, k)
        for layer in (self.down, self.up):
            nn.init.zeros_(layer.weight)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda n, k: RefAdapter(n, k, residual=False), "residual is missing"),
        (lambda n, k: RefAdapter(n, k, act=nn.Identity), "activation is missing"),
        (lambda n, k: RefAdapter(n, k, act=nn.ReLU), "ReLU instead of GELU"),
        (lambda n, k: RefAdapter(n, k, act=nn.Tanh), "tanh instead of GELU"),
        (lambda n, k: RefAdapter(n, k, std=None), "changes its input by"),  # PyTorch's default init
        (lambda n, k: RefAdapter(n, k, bias=False), "down has no bias"),
        (lambda n, k: RefAdapter(n, k, extra=True), r"has 44 parameters; expected 2 n k \+ n \+ k = 32"),
        (ZeroInit, "no gradient reaches up.weight"),
        (lambda n, k: RefAdapter(k, n), r"down.weight has shape \(6, 2\); expected \(2, 6\) \(transposed"),
    ],
)
def test_adapter_mistakes_are_named(make, match):
    with pytest.raises(AssertionError, match=match):
        check_adapter_module(make)
