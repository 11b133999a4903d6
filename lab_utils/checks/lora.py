"""Exercise checks for chapter "Parameter-efficient fine-tuning" (lora): LoRA's forward, its merge, the lecture's
``linear_to_lora`` fixed, and the largest rank under a parameter budget.

The reference is ``lab_utils.lora`` (PEFT's names): ``h = base_layer(x) + scaling * lora_B(lora_A(lora_dropout(x)))``
with ``lora_A.weight`` of shape ``(r, in)``, ``lora_B.weight`` ``(out, r)`` and ``scaling = lora_alpha / r``; merged,
``W' = W + scaling * B @ A`` of shape ``(out, in)``. The layers checked have a non-zero B (else every update is 0 and
half the mistakes pass), a square case (where a transposed update has the right shape) and ``scaling != 1``.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from lab_utils.checks.feedback import StudentFunction, as_number, exercise_check, name_mistake
from lab_utils.checks.feedback import fail as _fail
from lab_utils.checks.feedback import success as _success
from lab_utils.lora import LoRALinear, lora_parameter_count

__all__ = ["check_linear_to_lora", "check_lora_budget", "check_lora_forward", "check_lora_merge"]

_RTOL, _ATOL = 1e-5, 1e-5  # float32 sums of a few products of N(0, 1) values agree to ~1e-6 whatever the order
# (in_features, out_features, r, lora_alpha): non-square with scaling 4, square (a transposed update fits) with 2
_CASES = ((6, 4, 2, 8.0), (5, 5, 3, 6.0))
_SEED = 1234  # re-seeded before the student's call and the reference's, so both draw the same dropout mask


def _close(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a.detach().float(), b.detach().float(), rtol=_RTOL, atol=_ATOL)


def _name(got: Tensor, candidates: Iterable[tuple[Callable[[], Tensor], str]], default: str) -> str:
    """The hint of the first candidate ``got`` equals: ``feedback.name_mistake`` for tensors. Candidates are
    computed lazily and skipped when their shapes do not fit (a transposed update of a non-square layer)."""
    for value, hint in candidates:
        try:
            if _close(got, value()):
                return hint
        except RuntimeError:
            continue
    return default


def _layer(n_in: int, n_out: int, r: int, alpha: float, seed: int, dropout: float = 0.0) -> LoRALinear:
    """A LoRALinear with N(0, 1) weights everywhere, B included, drawn from a local generator."""
    g = torch.Generator().manual_seed(seed)
    layer = LoRALinear(nn.Linear(n_in, n_out), r=r, lora_alpha=alpha, lora_dropout=dropout)
    with torch.no_grad():
        for p in (layer.base_layer.weight, layer.base_layer.bias, layer.lora_A.weight, layer.lora_B.weight):
            p.copy_(torch.randn(p.shape, generator=g))
    return layer


def _parts(layer: LoRALinear) -> tuple[Tensor, Tensor, Tensor, Tensor, float]:
    w = (layer.base_layer.weight, layer.base_layer.bias, layer.lora_A.weight, layer.lora_B.weight)
    return (*(t.detach().clone() for t in w), layer.scaling)


def _describe(layer: LoRALinear) -> str:
    return f"in={layer.in_features}, out={layer.out_features}, r={layer.r}, lora_alpha={layer.lora_alpha:g}"


class _UsedLayerForward(Exception):
    """The student's function called the layer itself (the library's forward) instead of computing it."""


def _block_forward(*args: object, **kwargs: object) -> Tensor:
    raise _UsedLayerForward


def _tensor(got: object, call: str, shape: tuple[int, ...]) -> Tensor:
    if not isinstance(got, Tensor):
        _fail(f"{call} returned a {type(got).__name__}; return a tensor of shape {shape}")
    if tuple(got.shape) != shape:
        _fail(f"{call} returned shape {tuple(got.shape)}; expected {shape}")
    return got


# --- forward ----------------------------------------------------------------------------------------------------------
def _forward_mistakes(layer: LoRALinear, x: Tensor) -> list[tuple[Callable[[], Tensor], str]]:
    W, b, A, B, s = _parts(layer)
    base, low = x @ W.T + b, x @ A.T @ B.T  # (..., out) each
    r, alpha = layer.r, layer.lora_alpha
    return [
        (lambda: s * low, "the frozen path is missing: add layer.base_layer(x)"),
        (lambda: x @ W.T + s * low, "the base layer's bias is missing: call layer.base_layer(x), which adds it"),
        (lambda: base + s * low + b, "the bias is added twice: layer.base_layer(x) already includes it"),
        (lambda: base + low, "the low-rank path is not scaled: multiply lora_B(lora_A(x)) by layer.scaling "
                             "(lora_alpha / r)"),
        (lambda: base + low * r / alpha, "the scaling is lora_alpha / r, not r / lora_alpha"),
        (lambda: base + low * alpha, "the scaling is lora_alpha / r, not lora_alpha alone"),
        (lambda: base + s * (x @ B @ A), "the update is applied transposed (x @ B @ A): lora_A (r x in) comes first, "
                                         "then lora_B, i.e. lora_B(lora_A(x)) = x @ A.T @ B.T"),
    ]


def _student_forward(fn: StudentFunction, layer: LoRALinear, x: Tensor, call: str) -> object:
    layer.forward = _block_forward  # an instance attribute shadows LoRALinear.forward for this layer only
    try:
        torch.manual_seed(_SEED)
        return fn(layer, x)
    except _UsedLayerForward:
        _fail(f"{call} called layer(x), the library's forward: compute the output from layer.base_layer, "
              "layer.lora_dropout, layer.lora_A, layer.lora_B and layer.scaling")
    finally:
        del layer.forward


def _dropped(layer: LoRALinear, x: Tensor, where: str) -> Tensor:
    """The output with the layer's dropout (same seed as the student's call) applied at ``where``."""
    W, b, A, B, s = _parts(layer)
    torch.manual_seed(_SEED)
    if where == "output":
        return layer.lora_dropout(x @ W.T + b + s * (x @ A.T @ B.T))
    if where == "branch output":
        return x @ W.T + b + layer.lora_dropout(s * (x @ A.T @ B.T))
    if where == "none":
        return x @ W.T + b + s * (x @ A.T @ B.T)
    d = layer.lora_dropout(x) if where != "functional" else nn.functional.dropout(x, 0.5, training=True)
    base_in = d if where == "both paths" else x
    return base_in @ W.T + b + s * (d @ A.T @ B.T)


@exercise_check
def check_lora_forward(fn: StudentFunction) -> None:
    """Check ``fn(layer, x) -> Tensor``, a ``LoRALinear``'s unmerged output, against PEFT's formula.

    Args:
        fn: the student's function, e.g. ``my_lora_forward(layer: LoRALinear, x: Tensor (..., in)) -> (..., out)``.

    Returns:
        True when every output is right; False (after printing a line) if ``fn`` is the stub.

    Raises:
        AssertionError: with the first wrong output and the likely mistake (base or bias missing, scaling missing
            or inverted, update transposed, dropout on the wrong path or left on in eval mode, no gradient).
    """
    g = torch.Generator().manual_seed(0)
    for i, case in enumerate(_CASES):
        layer = _layer(*case, seed=i + 1)
        x = torch.randn((3, case[0]) if i == 0 else (2, 3, case[0]), generator=g)
        call = f"{fn.name}(layer, x) with {_describe(layer)}, x of shape {tuple(x.shape)}"
        W, b, A, B, s = _parts(layer)
        want = x @ W.T + b + s * (x @ A.T @ B.T)
        got = _tensor(_student_forward(fn, layer, x, call), call, tuple(want.shape))
        if not _close(got, want):
            default = "h = base_layer(x) + scaling * lora_B(lora_A(lora_dropout(x)))"
            _fail(f"{call} is off by up to {(got - want).abs().max():.3g}: "
                  f"{_name(got, _forward_mistakes(layer, x), default)}")
        if not got.requires_grad:
            _fail(f"{call} returned a tensor without a gradient: use the layer's modules (no torch.no_grad(), "
                  ".detach() or .data), since training needs the gradients of lora_A and lora_B")
        got.sum().backward()
        if any(p.grad is None or not p.grad.any() for p in (layer.lora_A.weight, layer.lora_B.weight)):
            _fail(f"{call}: no gradient reaches lora_A and lora_B; use layer.lora_A and layer.lora_B themselves "
                  "(or their .weight), not detached copies")

    layer = _layer(6, 4, 2, 8.0, seed=3, dropout=0.5)
    x = torch.randn(4, 6, generator=g)
    for mode in ("train", "eval"):
        layer.train(mode == "train")
        call = f"{fn.name}(layer, x) with lora_dropout=0.5 in {mode} mode"
        want = _dropped(layer, x, "branch input" if mode == "train" else "none")
        got = _tensor(_student_forward(fn, layer, x, call), call, tuple(want.shape))
        if not _close(got, want):
            with torch.no_grad():
                mistakes = [("none", "layer.lora_dropout is missing: apply it to x before lora_A (it is active in "
                                     "training mode)"),
                            ("both paths", "the dropout also hit the frozen path: apply layer.lora_dropout to the "
                                           "LoRA branch's input only; base_layer sees x unchanged"),
                            ("branch output", "the dropout is applied to the LoRA branch's output; apply it to its "
                                              "input: lora_B(lora_A(lora_dropout(x)))"),
                            ("output", "the dropout is applied to the whole output; apply it to the LoRA branch's "
                                       "input only"),
                            ("functional", "in eval mode the dropout must be off: call the module layer.lora_dropout "
                                           "(it knows the mode) rather than F.dropout(x, p)")]
                mistakes = [(functools.partial(_dropped, layer, x, where), hint) for where, hint in mistakes]
            _fail(f"{call} is off by up to {(got - want).abs().max():.3g}: "
                  f"{_name(got, mistakes, 'dropout applies to the LoRA input only: lora_B(lora_A(lora_dropout(x)))')}")
    _success("LoRA forward right: base + scaling * B A x, with dropout on the LoRA input only (train mode), and "
             "gradients reach A and B")


# --- merge ------------------------------------------------------------------------------------------------------------
def _merge_mistakes(layer: LoRALinear) -> list[tuple[Callable[[], Tensor], str]]:
    W, _, A, B, s = _parts(layer)
    r, alpha = layer.r, layer.lora_alpha
    return [(lambda: s * B @ A, "the frozen weight W is missing: merged = W + scaling * B @ A"),
            (lambda: W, "the update is missing: add scaling * B @ A"),
            (lambda: W + B @ A, "the update is not scaled: multiply B @ A by layer.scaling (lora_alpha / r)"),
            (lambda: W + B @ A * r / alpha, "the scaling is lora_alpha / r, not r / lora_alpha"),
            (lambda: W + (s * B @ A).T, "the update is transposed: B @ A (out, r) @ (r, in) already has W's layout "
                                        "(out, in)")]


@exercise_check
def check_lora_merge(fn: StudentFunction) -> None:
    """Check ``fn(layer) -> Tensor (out, in)``, the merged weight ``W + scaling * B @ A``, computed without changing
    the layer.

    Args:
        fn: the student's function, e.g. ``my_merged_weight(layer: LoRALinear) -> Tensor``.

    Returns:
        True when every merged weight is right; False (after printing a line) if ``fn`` is the stub.

    Raises:
        AssertionError: with the first mistake (layer modified in place, W forgotten, scaling missing or inverted,
            transposed update, wrong shape).
    """
    for i, case in enumerate(_CASES):
        layer = _layer(*case, seed=10 + i)
        before = {k: v.clone() for k, v in layer.state_dict().items()}
        call = f"{fn.name}(layer) with {_describe(layer)}"
        got = fn(layer)
        changed = [k for k, v in layer.state_dict().items() if not torch.equal(v, before[k])]
        if changed or layer.merged:
            _fail(f"{call} changed the layer ({', '.join(changed) or 'merged flag'}): return a new tensor W + ... "
                  "without writing into layer.base_layer.weight or calling layer.merge(); the layer must stay "
                  "usable unmerged")
        W, _, A, B, s = _parts(layer)
        n_out, n_in = W.shape
        if isinstance(got, Tensor) and tuple(got.shape) == (n_in, n_out) and n_in != n_out:
            _fail(f"{call} returned shape {tuple(got.shape)}, the transpose of W's (out, in) = {(n_out, n_in)}: "
                  "the update is B @ A, (out, r) @ (r, in)")
        got = _tensor(got, call, (n_out, n_in))
        want = W + s * B @ A
        if not _close(got, want):
            _fail(f"{call} is off by up to {(got - want).abs().max():.3g}: "
                  f"{_name(got, _merge_mistakes(layer), 'merged = W + scaling * B @ A')}")
    _success("merged weight right (W + scaling * B @ A, shape (out, in)) and the layer left unchanged")


# --- the lecture's linear_to_lora, fixed ------------------------------------------------------------------------------
def _linear(n_in: int, n_out: int, seed: int) -> nn.Linear:
    g = torch.Generator().manual_seed(seed)
    linear = nn.Linear(n_in, n_out)
    with torch.no_grad():
        for p in linear.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return linear


def _check_wrapped(got: object, linear: nn.Linear, r: int, alpha: float, call: str) -> None:
    if not isinstance(got, LoRALinear):
        _fail(f"{call} returned a {type(got).__name__}; return a lab_utils.lora.LoRALinear")
    W, b = linear.weight.detach(), linear.bias.detach()
    base = got.base_layer
    if base.weight.shape == b.shape and torch.equal(base.weight.detach(), b):
        _fail(f"{call}: base_layer.weight holds the linear's bias (the lecture's erratum: its second copy writes "
              "linear.bias into .weight); copy the weight into .weight and the bias into .bias")
    if base.weight.shape != W.shape:
        _fail(f"{call}: base_layer.weight has shape {tuple(base.weight.shape)}; expected the linear's {tuple(W.shape)}")
    if not torch.equal(base.weight.detach(), W):
        _fail(f"{call}: base_layer.weight is not the linear's weight (the fresh nn.Linear keeps its random "
              "initialisation): copy linear.weight into it")
    if base.bias is None or not torch.equal(base.bias.detach(), b):
        _fail(f"{call}: base_layer.bias is not the linear's bias ({'none' if base.bias is None else 'a random one'}"
              "): copy linear.bias into base_layer.bias")
    if got.r != r:
        _fail(f"{call} built rank {got.r}; pass r=r to LoRALinear")
    if not math.isclose(got.scaling, alpha / r):
        _fail(f"{call}: scaling is {got.scaling:g}, expected lora_alpha / r = {alpha / r:g}: pass "
              "lora_alpha=lora_alpha to LoRALinear (the lecture's module had no scaling at all)")
    if got.lora_B.weight.detach().any():
        _fail(f"{call}: lora_B is not zero, so the new layer computes something else than the linear before any "
              "training (the lecture's random B); keep LoRALinear's zero initialisation of B")
    if any(p.requires_grad for p in base.parameters()):
        _fail(f"{call}: the base layer is trainable; LoRA trains lora_A and lora_B only (assigning linear.weight, "
              "a trainable Parameter, replaces the frozen one: copy values with .copy_ under torch.no_grad())")
    if not (got.lora_A.weight.requires_grad and got.lora_B.weight.requires_grad):
        _fail(f"{call}: lora_A and lora_B must stay trainable (requires_grad=True)")
    x = torch.randn(3, linear.in_features, generator=torch.Generator().manual_seed(7))
    if not _close(got(x), linear(x)):
        _fail(f"{call}: at initialisation the new layer must compute what the linear did, but differs by "
              f"{(got(x) - linear(x)).abs().max():.3g}")


@exercise_check
def check_linear_to_lora(fn: StudentFunction) -> None:
    """Check ``fn(linear, r, lora_alpha) -> LoRALinear``: a LoRALinear around a copy of ``linear`` (weight and bias)
    that computes exactly what ``linear`` did before training.

    Args:
        fn: the student's function, e.g. ``my_linear_to_lora(linear: nn.Linear, r: int, lora_alpha: float)``.

    Returns:
        True when the wrapped layers are right; False (after printing a line) if ``fn`` is the stub.

    Raises:
        AssertionError: with the first mistake (bias copied into the weight, weight or bias not copied, B not zero,
            scaling missing, base left trainable, the linear given modified).
    """
    for i, (n_in, n_out, r, alpha) in enumerate(_CASES):
        linear = _linear(n_in, n_out, seed=20 + i)
        before = {k: v.clone() for k, v in linear.state_dict().items()}
        call = f"{fn.name}(linear, r={r}, lora_alpha={alpha:g}) with linear = nn.Linear({n_in}, {n_out})"
        got = fn(linear, r, alpha)
        if any(not torch.equal(v, linear.state_dict()[k]) for k, v in before.items()):
            _fail(f"{call} changed the linear it was given; copy its weight and bias, do not write into them")
        _check_wrapped(got, linear, r, alpha, call)
    _success("linear_to_lora right: weight and bias copied, B = 0 (same outputs as the linear), scaling "
             "lora_alpha / r, base frozen")


# --- the largest rank under a budget ----------------------------------------------------------------------------------
# (budget, n_layers, shapes): a non-square pair (62.004 ranks: in and out sums differ; catches rounding up, not to the
# nearest), MiniLM's query+value (10.85), an exact fit (4), q,k,v,o (2.71) and a budget below one rank.
_QV = {"query": (384, 384), "value": (384, 384)}
_BUDGET_CASES = (
    (1_000_000, 6, {"query": (384, 384), "intermediate.dense": (384, 1536)}),
    (100_000, 6, _QV),
    (4 * 9216, 6, _QV),
    (50_000, 6, {"query": (384, 384), "key": (384, 384), "value": (384, 384), "attention.output.dense": (384, 384)}),
    (5_000, 12, {"query": (768, 768)}),
)


def _budget_mistakes(budget: int, n_layers: int, shapes: dict[str, tuple[int, int]]) -> list[tuple[float, str]]:
    ins, outs = sum(i for i, _ in shapes.values()), sum(o for _, o in shapes.values())
    exact = budget / (n_layers * (ins + outs))
    return [
        (budget // (ins + outs), "you forgot n_layers: every layer gets its own A and B for each target"),
        (budget // (n_layers * sum(i * o for i, o in shapes.values())), "r * in * out counts a full matrix per "
         "rank; LoRA adds r * (in + out) per target (A is r x in, B is out x r)"),
        (budget // (n_layers * ins), "you counted A (r x in) only; B (out x r) adds r * out"),
        (budget // (n_layers * outs), "you counted B (out x r) only; A (r x in) adds r * in"),
    ] + ([(math.ceil(exact), f"you rounded up or to the nearest ({exact:.4g} ranks fit): round down")]
         if round(exact) == math.ceil(exact) else
         [(math.ceil(exact), f"you rounded up ({exact:.4g} ranks fit): the rank must fit the budget, round down"),
          (round(exact), f"you rounded to the nearest ({exact:.4g} ranks fit): round down")])


@exercise_check
def check_lora_budget(fn: StudentFunction) -> None:
    """Check ``fn(budget, n_layers, shapes) -> int``: the largest rank r with
    ``lora_parameter_count(shapes, r, n_layers) <= budget`` (0 when not even r = 1 fits).

    Args:
        fn: the student's function, e.g. ``my_max_rank(budget, n_layers, shapes: {name: (in, out)})``.

    Returns:
        True when every rank is right; False (after printing a line) if ``fn`` is the stub.

    Raises:
        AssertionError: with the first wrong rank and the likely mistake (n_layers forgotten, r * in * out, one
            side only, rounded up or to the nearest, a float, a negative rank).
    """
    for budget, n_layers, shapes in _BUDGET_CASES:
        call = f"{fn.name}({budget:_}, {n_layers}, {dict(shapes)})"
        got = fn(budget, n_layers, dict(shapes))
        expected = budget // lora_parameter_count(shapes, 1, n_layers)  # the count is linear in r
        if isinstance(got, Tensor) and got.numel() == 1 and not got.is_floating_point():
            got = got.item()
        is_int = isinstance(got, numbers.Integral) and not isinstance(got, bool)
        value = got if is_int else as_number(got, call)
        if value != expected:
            mistakes = [(v, h) for v, h in _budget_mistakes(budget, n_layers, shapes) if v != expected]
            hint = ("nothing fits: return 0, not a negative rank" if value < 0 else
                    name_mistake(value, mistakes, "the largest r with n_layers * r * sum(in + out) <= budget"))
            _fail(f"{call} returned {got!r}; expected {expected}: {hint}")
        if not is_int:
            _fail(f"{call} returned {got!r} (a {type(got).__name__}); a rank is a whole number: return an int")
    _success("largest rank under each budget right (n_layers * r * sum(in + out) <= budget)")
