"""LoRA: a frozen Linear plus a trainable low-rank update that merges into the weight at inference.

Hu et al. 2022 ("LoRA: Low-Rank Adaptation of Large Language Models"): h = W x + (alpha / r) B A x, with A of shape
`(r, in)` (Kaiming-uniform) and B of shape `(out, r)` (zeros), so a fresh layer is exactly the frozen one. Names and
initialisation follow huggingface/peft (`base_layer`, `lora_A`, `lora_B`, `scaling`, `merge()`, `unmerge()`,
`get_delta_weight()`), so the chapter can check this module against `peft.get_peft_model` weight for weight.
Chapter "Parameter-efficient fine-tuning" (chapters/03_peft/lora.ipynb). Needs only torch.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterable, Iterator, Mapping

import torch
from torch import Tensor, nn

from lab_utils.freezing import matches_key

__all__ = ["LoRALinear", "inject_lora", "lora_layers", "lora_parameter_count", "merge_lora", "unmerge_lora"]


def _check_rank(r: object, *, minimum: int = 1) -> int:
    # bool is a subclass of int: `r=True` is a mistake, not a rank of 1.
    if isinstance(r, bool) or not isinstance(r, int):
        raise TypeError(f"r (the rank) must be an int, got {type(r).__name__} {r!r}")
    if r < minimum:
        raise ValueError(f"r (the rank) must be >= {minimum}, got {r}")
    return r


@contextlib.contextmanager
def _full_precision_matmul() -> Iterator[None]:
    """float32 matmuls in full precision inside the block (no TF32), whatever the session chose.

    A notebook that sets ``torch.set_float32_matmul_precision("high")`` for speed makes ``B @ A`` a TF32 product on
    the GPU, with about 3 significant digits: a merge computed that way changes the model's outputs by ~1e-3, not
    by float32 rounding. Merging happens once, so it can afford the exact product.
    """
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


class LoRALinear(nn.Module):
    """A frozen `nn.Linear` plus a trainable low-rank update: `base_layer(x) + scaling * lora_B(lora_A(dropout(x)))`.

    Attributes:
        base_layer: the wrapped Linear, weight `(out, in)`; its parameters are frozen (`requires_grad=False`).
        lora_A: `nn.Linear(in, r, bias=False)`, weight `(r, in)`, Kaiming-uniform (a = sqrt(5)) as in PEFT.
        lora_B: `nn.Linear(r, out, bias=False)`, weight `(out, r)`, zeros: a fresh layer changes nothing.
        r, lora_alpha, scaling: the rank, alpha and `scaling = lora_alpha / r` (dividing by r spares re-tuning the
            learning rate when r changes, Hu et al. 2022, §4.1).
        lora_dropout: `nn.Dropout(p)` on the LoRA branch's input only (`nn.Identity` when p = 0).
        merged: True while the update is folded into `base_layer.weight` (then forward is the base layer alone).
        in_features, out_features: the base layer's sizes.
    """

    def __init__(self, base_layer: nn.Linear, r: int = 8, lora_alpha: float = 8.0, lora_dropout: float = 0.0):
        """Wrap `base_layer` (frozen in place) with a rank-`r` update.

        Args:
            base_layer: the `nn.Linear` to adapt (any subclass, e.g. a quantized Linear, is accepted).
            r: rank of the update, an int >= 1.
            lora_alpha: > 0; the update is multiplied by `lora_alpha / r`.
            lora_dropout: dropout probability on the LoRA branch's input, in [0, 1).

        Raises:
            TypeError: if `base_layer` is not an `nn.Linear` or `r` is not an int.
            ValueError: if `r < 1`, `lora_alpha <= 0` or `lora_dropout` is outside [0, 1).
        """
        super().__init__()
        if isinstance(base_layer, LoRALinear):
            raise TypeError("base_layer is already a LoRALinear: wrap its .base_layer, or keep the one you have")
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(base_layer).__name__}: target the Linear "
                            "layers of the model (e.g. 'query', 'value'), not the blocks that contain them")
        _check_rank(r)
        if not isinstance(lora_alpha, (int, float)) or isinstance(lora_alpha, bool) or not lora_alpha > 0:
            raise ValueError(f"lora_alpha must be a number > 0, got {lora_alpha!r}")
        if not isinstance(lora_dropout, (int, float)) or not 0.0 <= lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be a probability in [0, 1), got {lora_dropout!r}")
        self.base_layer = base_layer
        for p in base_layer.parameters():
            p.requires_grad_(False)
        self.in_features, self.out_features = base_layer.in_features, base_layer.out_features
        self.r, self.lora_alpha = r, lora_alpha
        self.scaling = lora_alpha / r
        self.lora_dropout = nn.Dropout(lora_dropout) if lora_dropout > 0 else nn.Identity()
        weight = base_layer.weight
        # A quantized base stores integers: the update is then kept in float32.
        dtype = weight.dtype if weight.is_floating_point() else torch.float32
        self.lora_A = nn.Linear(self.in_features, r, bias=False, device=weight.device, dtype=dtype)  # (r, in)
        self.lora_B = nn.Linear(r, self.out_features, bias=False, device=weight.device, dtype=dtype)  # (out, r)
        self.reset_lora_parameters()
        self.merged = False

    def reset_lora_parameters(self) -> None:
        """A Kaiming-uniform (a = sqrt(5), PEFT's default), B = 0: the update B A starts at exactly zero."""
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def get_delta_weight(self) -> Tensor:
        """The update `scaling * B @ A`, shape `(out, in)`, in the LoRA parameters' dtype (differentiable)."""
        return self.scaling * (self.lora_B.weight @ self.lora_A.weight)  # (out, r) @ (r, in) -> (out, in)

    def merge(self) -> None:
        """Fold the update into the base weight: `W <- W + scaling * B A`; forward is then one Linear.

        Raises:
            RuntimeError: if already merged (merging twice would add the update twice).
            TypeError: if the base weight is not floating point (a quantized base cannot absorb the update).
        """
        if self.merged:
            raise RuntimeError("this LoRALinear is already merged: call unmerge() first (merging twice would add "
                               "the update B A twice)")
        weight = self.base_layer.weight
        if not weight.is_floating_point():
            raise TypeError(f"cannot merge into a {weight.dtype} base weight: de-quantize it first")
        with torch.no_grad(), _full_precision_matmul():
            weight += self.get_delta_weight().to(weight.dtype)
        self.merged = True

    def unmerge(self) -> None:
        """Subtract the update from the base weight again (restores it up to floating-point rounding).

        Raises:
            RuntimeError: if the layer is not merged.
        """
        if not self.merged:
            raise RuntimeError("this LoRALinear is not merged: there is nothing to unmerge")
        weight = self.base_layer.weight
        with torch.no_grad(), _full_precision_matmul():
            weight -= self.get_delta_weight().to(weight.dtype)
        self.merged = False

    def forward(self, x: Tensor) -> Tensor:
        """`x` of shape `(..., in)` -> `(..., out)`: the base output plus the scaled update (base alone if merged)."""
        out = self.base_layer(x)  # (..., out), bias included
        if self.merged:
            return out  # the update already lives in base_layer.weight
        h = self.lora_A(self.lora_dropout(x.to(self.lora_A.weight.dtype)))  # (..., r)
        update = self.lora_B(h)  # (..., out)
        return out + (update * self.scaling).to(out.dtype)

    def extra_repr(self) -> str:
        return f"r={self.r}, lora_alpha={self.lora_alpha}, scaling={self.scaling:g}, merged={self.merged}"


# ---------------------------------------------------------------- a whole model



def _keys(value: str | Iterable[str], what: str) -> list[str]:
    keys = [value] if isinstance(value, str) else list(value)
    if not all(isinstance(k, str) and k for k in keys):
        raise TypeError(f"{what} must be a module name or a list of module names, got {value!r}")
    return keys


def _linear_names(model: nn.Module) -> list[str]:
    """The model's Linear layers, with layer indices folded ('encoder.layer.N.attention.self.query'), once each."""
    inside_lora = {f"{n}.{c}" for n, m in model.named_modules() if isinstance(m, LoRALinear)
                   for c in ("base_layer", "lora_A", "lora_B")}
    names = [re.sub(r"\.\d+(?=\.|$)", ".N", n) for n, m in model.named_modules()
             if isinstance(m, nn.Linear) and n not in inside_lora]
    return list(dict.fromkeys(names))


def inject_lora(model: nn.Module, target_modules: str | Iterable[str], *, r: int = 8, lora_alpha: float = 8.0,
                lora_dropout: float = 0.0, trainable: str | Iterable[str] = ("classifier",)) -> nn.Module:
    """Replace, in place, every Linear whose name matches a target by a `LoRALinear`, and freeze everything else.

    A module matches key `k` when its full name is `k` or ends with `"." + k` (PEFT's rule for a list, so
    `"query"` matches `bert.encoder.layer.3.attention.self.query` and `"attention.output.dense"` matches the
    attention's output projection but not the feed-forward's `output.dense`). Afterwards only the LoRA
    parameters and the modules matching `trainable` (a new task head) require gradients.

    Args:
        model: e.g. a `BertForSequenceClassification`; modified in place.
        target_modules: names of Linear layers to adapt, e.g. `["query", "value"]`.
        r, lora_alpha, lora_dropout: passed to every `LoRALinear`.
        trainable: names of modules trained in full (PEFT's `modules_to_save`); `()` for none.

    Returns:
        `model`, with `LoRALinear` layers in place of the targets.

    Raises:
        ValueError: if a key matches no module (the message lists the model's Linear layers), a target is already
            a `LoRALinear`, a `trainable` key matches nothing, or a module is both a target and `trainable`.
        TypeError: if a key matches a module that is not an `nn.Linear` (e.g. a whole attention block).
    """
    targets, keep = _keys(target_modules, "target_modules"), _keys(trainable, "trainable")
    if not targets:
        raise ValueError("target_modules is empty: name at least one Linear layer, e.g. ['query', 'value']")
    _check_rank(r)
    modules = dict(model.named_modules())
    chosen: dict[str, nn.Linear] = {}
    for key in targets:
        found = {n: m for n, m in modules.items() if n and matches_key(n, key)}
        if not found:
            raise ValueError(f"target module {key!r} matches no module of {type(model).__name__}; its Linear layers "
                             f"are: {', '.join(_linear_names(model))}")
        for n, m in found.items():
            if isinstance(m, LoRALinear) or n.rsplit(".", 1)[-1] in ("base_layer", "lora_A", "lora_B"):
                raise ValueError(f"{n!r} already carries LoRA: inject into a fresh model (or merge_lora and reload)")
            if not isinstance(m, nn.Linear):
                raise TypeError(f"target module {key!r} matches {n!r}, a {type(m).__name__}, not an nn.Linear: "
                                f"name Linear layers, e.g. {', '.join(_linear_names(model)[:4])}")
            chosen[n] = m
    for p in model.parameters():
        p.requires_grad_(False)
    for name, linear in chosen.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(linear, r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout))
    for _, layer in lora_layers(model):
        for p in (*layer.lora_A.parameters(), *layer.lora_B.parameters()):
            p.requires_grad_(True)
    for key in keep:
        found = {n: m for n, m in model.named_modules() if n and matches_key(n, key)}
        if not found:
            raise ValueError(f"trainable module {key!r} matches no module of {type(model).__name__}; pass "
                             "trainable=() if the model has no new head to train")
        for n, m in found.items():
            if isinstance(m, LoRALinear) or any(isinstance(s, LoRALinear) for s in m.modules()):
                raise ValueError(f"{n!r} is both a LoRA target and trainable in full: choose one")
            for p in m.parameters():
                p.requires_grad_(True)
    return model


def lora_layers(model: nn.Module) -> list[tuple[str, LoRALinear]]:
    """Every `LoRALinear` of `model` as `(full name, layer)`, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]


def _all_layers(model: nn.Module) -> list[LoRALinear]:
    layers = [m for _, m in lora_layers(model)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no LoRALinear layer: call inject_lora first")
    return layers


def merge_lora(model: nn.Module) -> nn.Module:
    """Merge every LoRA layer of `model` (in place): inference then costs what the base model costs.

    Raises:
        ValueError: if the model has no LoRA layer. RuntimeError: if a layer is already merged.
    """
    layers = _all_layers(model)
    if any(layer.merged for layer in layers):
        raise RuntimeError("some LoRA layers are already merged: call unmerge_lora first")
    for layer in layers:
        layer.merge()
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    """Undo `merge_lora` (in place), e.g. to train further.

    Raises:
        ValueError: if the model has no LoRA layer. RuntimeError: if a layer is not merged.
    """
    layers = _all_layers(model)
    if not all(layer.merged for layer in layers):
        raise RuntimeError("some LoRA layers are not merged: call merge_lora first")
    for layer in layers:
        layer.unmerge()
    return model


def lora_parameter_count(shapes: Mapping[str, tuple[int, int]], r: int, n_layers: int = 1) -> int:
    """Trainable LoRA parameters: `n_layers * sum(r * (in + out))` over the adapted Linear shapes.

    Each adapted `(in, out)` Linear gains A `(r, in)` and B `(out, r)`: r * (in + out) weights, no bias.

    Args:
        shapes: `{name: (in_features, out_features)}` of the Linears adapted in one layer, e.g.
            `{"query": (384, 384), "value": (384, 384)}`.
        r: rank, an int >= 0 (0 counts nothing).
        n_layers: how many layers repeat these shapes (>= 1).

    Returns:
        The count, an int. E.g. MiniLM (6 layers), query and value, r = 8: 6 * 2 * 8 * 768 = 73,728.

    Raises:
        TypeError / ValueError: on a non-int or negative rank, n_layers < 1, or a shape that is not two ints >= 1.
    """
    _check_rank(r, minimum=0)
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
        raise ValueError(f"n_layers must be an int >= 1, got {n_layers!r}")
    total = 0
    for name, shape in shapes.items():
        if (not isinstance(shape, (tuple, list)) or len(shape) != 2
                or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape)):
            raise ValueError(f"shapes[{name!r}] must be (in_features, out_features), two ints >= 1, got {shape!r}")
        total += r * (shape[0] + shape[1])
    return n_layers * total
