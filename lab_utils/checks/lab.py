"""Exercise checks for the hands-on lab "LoRA by hand" (chapters/07_lora_lab): the student's own LoRA layer, the
trainable-parameter setting of a BERT classifier with LoRA, and the student's own bottleneck adapter.

The references are ``lab_utils.lora.LoRALinear`` (``base_layer(x) + lora_alpha / r * lora_B(lora_A(x))``, B = 0 at
the start, base frozen) and ``lab_utils.adapters.BottleneckAdapter`` (``x + up(gelu(down(x)))``, near-identity at the
start). The layers checked get N(0, 1) weights everywhere, B included, so that a forgotten scaling or bias shows, and
a square case where a transposed matrix would fit. The lecture's ``linear_to_lora`` is checked by
``lab_utils.checks.lora.check_linear_to_lora``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from lab_utils.adapters import BottleneckAdapter, adapter_parameter_count
from lab_utils.checks.feedback import StudentFunction, exercise_check
from lab_utils.checks.feedback import fail as _fail
from lab_utils.checks.feedback import success as _success
from lab_utils.lora import inject_lora

__all__ = ["check_adapter_module", "check_lora_module", "check_trainable"]

_RTOL, _ATOL = 1e-5, 1e-5  # float32 sums of a few products of N(0, 1) values agree to ~1e-6 whatever the order
# (in_features, out_features, r, lora_alpha): non-square with scaling 4, square (a transposed B A fits) with 2
_LORA_CASES = ((6, 4, 2, 8.0), (5, 5, 3, 6.0))
# (hidden_size, bottleneck): a small one and MiniLM's width with the lab's k
_ADAPTER_CASES = ((6, 2), (384, 16))


def _close(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a.detach().float(), b.detach().float(), rtol=_RTOL, atol=_ATOL)


def _first_match(got: Tensor, candidates: Iterable[tuple[Tensor, str]], default: str) -> str:
    """The hint of the first candidate output that ``got`` equals, or ``default``."""
    return next((hint for value, hint in candidates if _close(got, value)), default)


def _linear_attr(module: nn.Module, name: str, shape: tuple[int, int], what: str, call: str) -> nn.Linear:
    layer = getattr(module, name, None)
    if not isinstance(layer, nn.Linear):
        _fail(f"{call} has no nn.Linear attribute {name!r} ({what}); found {type(layer).__name__}")
    if tuple(layer.weight.shape) != shape:
        transposed = " (transposed: nn.Linear(in, out) stores its weight as (out, in))" if (
            tuple(layer.weight.shape) == shape[::-1]) else ""
        _fail(f"{call}: {name}.weight has shape {tuple(layer.weight.shape)}; expected {shape}{transposed}")
    return layer


def _output(module: nn.Module, x: Tensor, call: str, shape: tuple[int, ...]) -> Tensor:
    got = module(x)
    if not isinstance(got, Tensor):
        _fail(f"{call}: forward returned a {type(got).__name__}; return a tensor of shape {shape}")
    if tuple(got.shape) != shape:
        _fail(f"{call}: forward returned shape {tuple(got.shape)}; expected {shape}")
    return got


# --- the student's LoRA layer -----------------------------------------------------------------------------------------
def _lora_mistakes(x: Tensor, W: Tensor, b: Tensor, A: Tensor, B: Tensor, r: int,
                   alpha: float) -> list[tuple[Tensor, str]]:
    """What the usual wrong forwards return for input ``x`` (..., in), weight W (out, in), A (r, in), B (out, r)."""
    update = x @ A.T @ B.T  # (..., out)
    return [(x @ W.T + b + update, "the update is not scaled: multiply lora_B(lora_A(x)) by lora_alpha / r (the "
                                   "lecture's module had no scaling)"),
            (x @ W.T + b + r / alpha * update, "the scaling is lora_alpha / r, not r / lora_alpha"),
            (x @ W.T + alpha / r * update, "the base layer's bias is missing from the output: call base_layer(x), "
                                           "which adds it"),
            (x @ W.T + b, "the update is missing: add lora_alpha / r * lora_B(lora_A(x))"),
            (alpha / r * update, "the frozen layer's output is missing: base_layer(x) + ...")]


@exercise_check
def check_lora_module(cls: StudentFunction) -> None:
    """Check the student's LoRA layer class, built as ``cls(in_features, out_features, r, lora_alpha)``.

    The layer must own ``base_layer`` (``nn.Linear(in, out)`` with its bias, frozen), ``lora_A``
    (``nn.Linear(in, r, bias=False)``, weight (r, in), random) and ``lora_B`` (``nn.Linear(r, out, bias=False)``,
    weight (out, r), zeros), and compute ``base_layer(x) + lora_alpha / r * lora_B(lora_A(x))`` for ``x`` (..., in).

    Args:
        cls: the student's class, e.g. ``MyLoRALinear``.

    Returns:
        True when every layer is right; False (after printing a line) if the constructor is the stub.

    Raises:
        AssertionError: with the first mistake (B randomly initialised, A zero too, base layer left trainable or
            without its bias, LoRA frozen, scaling missing or inverted, bias dropped in forward, no gradient to A, B).
    """
    for i, (n_in, n_out, r, alpha) in enumerate(_LORA_CASES):
        call = f"{cls.name}({n_in}, {n_out}, r={r}, lora_alpha={alpha:g})"
        layer = cls(n_in, n_out, r, alpha)
        if not isinstance(layer, nn.Module):
            _fail(f"{call} built a {type(layer).__name__}; define a subclass of nn.Module")
        base = _linear_attr(layer, "base_layer", (n_out, n_in), "the frozen layer", call)
        A = _linear_attr(layer, "lora_A", (r, n_in), "in -> r", call)
        B = _linear_attr(layer, "lora_B", (n_out, r), "r -> out", call)
        if base.bias is None:
            _fail(f"{call}: base_layer has no bias; the layers LoRA replaces (BERT's query, key, value) have one: "
                  "keep nn.Linear's default bias=True")
        if A.bias is not None or B.bias is not None:
            _fail(f"{call}: lora_A and lora_B have a bias; LoRA's update B A x has none (bias=False)")
        if any(p.requires_grad for p in base.parameters()):
            _fail(f"{call}: the base layer is trainable; LoRA freezes the pretrained weight and bias "
                  "(requires_grad_(False)) and trains only lora_A and lora_B")
        if not (A.weight.requires_grad and B.weight.requires_grad):
            _fail(f"{call}: lora_A and lora_B must be trainable (requires_grad=True)")
        if B.weight.detach().any():
            _fail(f"{call}: lora_B starts non-zero (B randomly initialised), so the new layer changes the model "
                  "before any training; initialise B with zeros (nn.init.zeros_)")
        if not A.weight.detach().any():
            _fail(f"{call}: lora_A is zero too; with A = B = 0 neither receives a gradient and LoRA never trains: "
                  "keep A random (e.g. nn.init.kaiming_uniform_) and only B at zero")
        g = torch.Generator().manual_seed(100 + i)
        with torch.no_grad():
            for p in (base.weight, base.bias, A.weight):
                p.copy_(torch.randn(p.shape, generator=g))
        x = torch.randn((3, n_in) if i == 0 else (2, 3, n_in), generator=g)
        W, b, A_w = base.weight.detach(), base.bias.detach(), A.weight.detach()
        got = _output(layer, x, call, (*x.shape[:-1], n_out))
        if not _close(got, x @ W.T + b):
            hint = _first_match(got, [(x @ W.T, ": the base layer's bias is missing from the output; call "
                                                "base_layer(x), which adds it")], "")
            _fail(f"{call}: with B = 0 the layer must compute base_layer(x), but differs by up to "
                  f"{(got - (x @ W.T + b)).abs().max():.3g}{hint}")
        with torch.no_grad():
            B.weight.copy_(torch.randn(B.weight.shape, generator=g))
        B_w, s = B.weight.detach(), alpha / r
        want = x @ W.T + b + s * (x @ A_w.T @ B_w.T)
        got = _output(layer, x, call, tuple(want.shape))
        if not _close(got, want):
            mistakes = _lora_mistakes(x, W, b, A_w, B_w, r, alpha)
            _fail(f"{call}: with a non-zero B the output is off by up to {(got - want).abs().max():.3g}: "
                  + _first_match(got, mistakes, "forward = base_layer(x) + lora_alpha / r * lora_B(lora_A(x))"))
        if not got.requires_grad:
            _fail(f"{call}: the output has no gradient; do not detach or use torch.no_grad() in forward")
        got.sum().backward()
        if A.weight.grad is None or B.weight.grad is None or not (A.weight.grad.any() and B.weight.grad.any()):
            _fail(f"{call}: no gradient reaches lora_A and lora_B; use the modules themselves in forward")
    _success("LoRA layer right: base frozen (with its bias), A random, B = 0 (same output as the base at first), "
             "update scaled by lora_alpha / r")


# --- which parameters train ------------------------------------------------------------------------------------------
def _tiny_lora_bert() -> nn.Module:
    """A 2-layer BERT classifier (width 8) with LoRA on query, key and value: the lab's model in miniature."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=16, num_labels=2)
    torch.manual_seed(0)  # exercise_check restores the global RNG afterwards
    model = BertForSequenceClassification(config)
    return inject_lora(model, ["query", "key", "value"], r=2, lora_alpha=4, trainable=("classifier",))


def _should_train(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name or name.startswith("classifier.")


def _listed(names: list[str], limit: int = 3) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


@exercise_check
def check_trainable(fn: StudentFunction) -> None:
    """Check ``fn(model)``: in place, only the LoRA matrices and the classifier of a BERT classifier train.

    The check builds a tiny ``BertForSequenceClassification`` with ``LoRALinear`` on query, key and value (names
    as in the lab: ``bert.encoder.layer.0.attention.self.query.lora_A.weight``, ``classifier.weight``), sets every
    parameter trainable, then every parameter frozen, and calls ``fn`` on each.

    Args:
        fn: the student's function, e.g. ``my_set_trainable(model)`` (its return value is ignored).

    Returns:
        True when the right parameters train in both cases; False (after printing a line) if ``fn`` is the stub.

    Raises:
        AssertionError: with the first mistake (pretrained weights left trainable, the frozen base inside a LoRA
            layer trainable, the classifier frozen, LoRA frozen, a value changed).
    """
    for start in (True, False):
        model = _tiny_lora_bert()
        model.requires_grad_(start)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        call = f"{fn.name}(model) on a model whose parameters all start with requires_grad={start}"
        fn(model)
        changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
        if changed:
            _fail(f"{call} changed the values of {_listed(changed)}; set requires_grad only")
        params = dict(model.named_parameters())
        frozen_lora = [n for n, p in params.items() if ".lora_" in n and not p.requires_grad]
        frozen_head = [n for n, p in params.items() if n.startswith("classifier.") and not p.requires_grad]
        extra = [n for n, p in params.items() if p.requires_grad and not _should_train(n)]
        if frozen_lora:
            _fail(f"{call}: LoRA is frozen ({_listed(frozen_lora)}); lora_A and lora_B are what LoRA trains")
        if frozen_head:
            _fail(f"{call}: the classifier is frozen ({_listed(frozen_head)}); it is new and random, so it must "
                  "train (the lecture's loop over model.bert.named_parameters() never touched it: it stayed "
                  "trainable only because a new model starts trainable)")
        outside = [n for n in extra if ".base_layer." not in n]
        if outside:
            _fail(f"{call}: pretrained weights are left trainable ({_listed(outside)}); freeze everything that is "
                  "neither LoRA nor the classifier (requires_grad_(False) on the whole model first is the "
                  "simplest way)")
        if extra:
            _fail(f"{call}: the frozen layer inside each LoRA layer trains ({_listed(extra)}); only lora_A and "
                  "lora_B may")
    _success("trainable parameters right: LoRA matrices and the classifier only, whatever the model's state before")


# --- the student's adapter -------------------------------------------------------------------------------------------
def _adapter_mistakes(reference: BottleneckAdapter, x: Tensor) -> list[tuple[Tensor, str]]:
    """What the usual wrong adapters return for ``x`` (..., n), with the reference's weights."""
    gelu = nn.functional.gelu
    with torch.no_grad():
        h = reference.down(x)  # (..., k)
        return [(reference.up(gelu(h)), "the residual is missing: return x + up(gelu(down(x)))"),
                (x + reference.up(h), "the activation is missing: x + up(gelu(down(x)))"),
                (x + reference.up(torch.relu(h)), "ReLU instead of GELU: use nn.GELU(), BERT's activation"),
                (x + reference.up(torch.tanh(h)), "tanh instead of GELU: use nn.GELU(), BERT's activation"),
                (gelu(x + reference.up(h)), "the activation belongs between down and up, not after the residual")]


@exercise_check
def check_adapter_module(cls: StudentFunction) -> None:
    """Check the student's bottleneck adapter class, built as ``cls(hidden_size, bottleneck)``.

    The module must own ``down`` (``nn.Linear(hidden_size, bottleneck)``) and ``up`` (``nn.Linear(bottleneck,
    hidden_size)``), both with a bias, compute ``x + up(gelu(down(x)))`` (``lab_utils.adapters.BottleneckAdapter``)
    and start nearly as the identity while ``up`` can still receive a gradient.

    Args:
        cls: the student's class, e.g. ``MyAdapter``.

    Returns:
        True when every adapter is right; False (after printing a line) if the constructor is the stub.

    Raises:
        AssertionError: with the first mistake (wrong shapes, biases missing, extra parameters, not near the
            identity at the start, all-zero weights, residual or activation missing, another activation).
    """
    for i, (n, k) in enumerate(_ADAPTER_CASES):
        call = f"{cls.name}({n}, {k})"
        adapter = cls(n, k)
        if not isinstance(adapter, nn.Module):
            _fail(f"{call} built a {type(adapter).__name__}; define a subclass of nn.Module")
        down = _linear_attr(adapter, "down", (k, n), "W_d, hidden_size -> bottleneck", call)
        up = _linear_attr(adapter, "up", (n, k), "W_u, bottleneck -> hidden_size", call)
        if down.bias is None or up.bias is None:
            _fail(f"{call}: {'down' if down.bias is None else 'up'} has no bias; each projection of a Houlsby "
                  "adapter has one")
        count, want_count = sum(p.numel() for p in adapter.parameters()), adapter_parameter_count(1, n, k, 1)
        if count != want_count:
            _fail(f"{call} has {count:,} parameters; expected 2 n k + n + k = {want_count:,} (down and up with "
                  "their biases, nothing else)")
        g = torch.Generator().manual_seed(200 + i)
        x = torch.randn(4, 3, n, generator=g)
        fresh = _output(adapter, x, call, tuple(x.shape))
        drift = ((fresh - x).norm() / x.norm()).item()
        if (fresh.norm() / x.norm()).item() < 1e-2:
            _fail(f"{call}: a fresh adapter returns nearly zero instead of its input: the residual is missing, "
                  "return x + up(gelu(down(x)))")
        if drift > 1e-2:
            _fail(f"{call}: a fresh adapter changes its input by {drift:.1%} (relative norm); it must start "
                  "(nearly) as the identity so that the pretrained model is unchanged: draw the weights with a "
                  "small std (e.g. nn.init.normal_(w, std=1e-3)) and set the biases to zero")
        fresh.pow(2).sum().backward()
        if up.weight.grad is None or not up.weight.grad.any():
            _fail(f"{call}: no gradient reaches up.weight at the start; with both projections at zero the adapter "
                  "never trains: draw the weights from a small normal distribution instead")
        reference = BottleneckAdapter(n, k, activation="gelu")
        with torch.no_grad():
            for name in ("down.weight", "down.bias", "up.weight", "up.bias"):
                value = 0.5 * torch.randn(reference.get_parameter(name).shape, generator=g)
                reference.get_parameter(name).copy_(value)
                adapter.get_parameter(name).copy_(value)
            want = reference(x)
        got = _output(adapter, x, call, tuple(want.shape))
        if not _close(got, want):
            mistakes = _adapter_mistakes(reference, x)
            _fail(f"{call}: with non-zero weights the output is off by up to {(got - want).abs().max():.3g}: "
                  + _first_match(got, mistakes, "forward = x + up(gelu(down(x)))"))
    _success("adapter right: x + up(gelu(down(x))), 2 n k + n + k parameters, nearly the identity at first")
