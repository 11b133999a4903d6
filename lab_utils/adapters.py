"""Bottleneck adapters (Houlsby et al., 2019): f(x) = x + W_u sigma(W_d x), W_d (k, n), W_u (n, k), k << n.

Two adapters per encoder layer, one after the attention output projection and one after the feed-forward output
projection, both before the residual add + LayerNorm; their weights start near zero, so a fresh adapter is nearly
the identity and the pretrained model is unchanged before training. Only the adapters (and, as in the paper, the
LayerNorms and the task head) are trained. Chapter "Parameter-efficient fine-tuning" (chapters/03_peft/adapters).
Shapes: hidden states (..., n); the adapter acts on the last dimension.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor, nn

from lab_utils.freezing import encoder_layers, matches_key

__all__ = ["ACTIVATIONS", "AdaptedLinear", "BottleneckAdapter", "adapter_layers", "adapter_parameter_count",
           "insert_adapters"]

ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh, "identity": nn.Identity}
# The two projections an adapter follows in a BERT layer (transformers' module names, relative to the layer):
# BertSelfOutput.dense (attention output, n -> n) and BertOutput.dense (feed-forward output, 4n -> n).
BERT_TARGETS = ("attention.output.dense", "output.dense")


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


class BottleneckAdapter(nn.Module):
    """The adapter module: ``x + up(act(down(x)))``, a residual bottleneck of width ``bottleneck``.

    ``down`` = ``nn.Linear(hidden_size, bottleneck)`` (W_d, weight (k, n)), ``up`` = ``nn.Linear(bottleneck,
    hidden_size)`` (W_u, weight (n, k)). Both weights are drawn from N(0, init_std^2) and both biases are zero, so
    the output differs from ``x`` by O(init_std^2): near-identity, yet both matrices receive gradients (Houlsby et
    al. initialise near zero for this reason; an all-zero adapter would never train, a zero ``up`` alone would).

    Args:
        hidden_size: n, the width of the hidden states it adapts.
        bottleneck: k, the width of the bottleneck (k << n saves parameters; any k >= 1 is allowed).
        activation: one of :data:`ACTIVATIONS` ("gelu", "relu", "tanh", "identity").
        init_std: standard deviation of the initial weights (> 0; 1e-3 keeps the adapter within ~1e-5 of identity).

    Raises:
        TypeError / ValueError: non-int or non-positive sizes, an unknown activation, ``init_std`` <= 0.
    """

    def __init__(self, hidden_size: int, bottleneck: int, activation: str = "gelu", init_std: float = 1e-3) -> None:
        super().__init__()
        _positive_int(hidden_size, "hidden_size")
        _positive_int(bottleneck, "bottleneck")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if isinstance(init_std, bool) or not isinstance(init_std, int | float) or not init_std > 0:
            raise ValueError(f"init_std must be a number > 0 (e.g. 1e-3), got {init_std!r}; with 0 neither "
                             "projection would ever receive a gradient")
        self.hidden_size, self.bottleneck = hidden_size, bottleneck
        self.activation, self.init_std = activation, float(init_std)
        self.down = nn.Linear(hidden_size, bottleneck)  # W_d: (k, n)
        self.act = ACTIVATIONS[activation]()
        self.up = nn.Linear(bottleneck, hidden_size)  # W_u: (n, k)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Near-identity initialisation: weights ~ N(0, init_std^2), biases 0."""
        for layer in (self.down, self.up):
            nn.init.normal_(layer.weight, std=self.init_std)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` (..., n) -> (..., n)."""
        if x.shape[-1] != self.hidden_size:
            raise ValueError(f"the adapter expects hidden states of width {self.hidden_size}, got shape "
                             f"{tuple(x.shape)}")
        return x + self.up(self.act(self.down(x)))  # (..., k) in the middle

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, bottleneck={self.bottleneck}, init_std={self.init_std:g}"


class AdaptedLinear(nn.Module):
    """A frozen projection followed by an adapter: ``adapter(base_layer(x))``.

    It takes the place of the projection in the model, so parameter names stay readable:
    ``...attention.output.dense.base_layer.weight`` (the pretrained weight, PEFT's name) and
    ``...attention.output.dense.adapter.down.weight``.
    """

    def __init__(self, base_layer: nn.Linear, adapter: BottleneckAdapter) -> None:
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(f"base_layer must be an nn.Linear, got {type(base_layer).__name__}")
        if adapter.hidden_size != base_layer.out_features:
            raise ValueError(f"adapter width {adapter.hidden_size} != the layer's out_features "
                             f"{base_layer.out_features}")
        self.base_layer, self.adapter = base_layer, adapter
        self.in_features, self.out_features = base_layer.in_features, base_layer.out_features

    def forward(self, x: Tensor) -> Tensor:
        """``x`` (..., in) -> (..., out)."""
        return self.adapter(self.base_layer(x))


def _encoder_layers(model: nn.Module) -> nn.ModuleList:
    try:
        layers = encoder_layers(model)
    except TypeError:
        layers = None
    ok = isinstance(layers, nn.ModuleList) and len(layers) > 0
    if ok:
        for layer in layers:
            for target in BERT_TARGETS:
                try:
                    ok = ok and isinstance(layer.get_submodule(target), nn.Linear | AdaptedLinear)
                except AttributeError:
                    ok = False
    if not ok:
        raise TypeError(f"insert_adapters needs a BERT-style encoder (encoder.layer[i] with "
                        f"{' and '.join(BERT_TARGETS)}), e.g. MiniLM loaded with "
                        f"AutoModelForSequenceClassification; got {type(model).__name__}")
    return layers



def insert_adapters(model: nn.Module, bottleneck: int, *, trainable: Iterable[str] | str = ("classifier",),
                    train_layer_norms: bool = True, activation: str = "gelu", init_std: float = 1e-3) -> nn.Module:
    """Insert two Houlsby adapters into every encoder layer (in place) and freeze the rest of the model.

    In each ``encoder.layer[i]``, ``attention.output.dense`` and ``output.dense`` are replaced by an
    :class:`AdaptedLinear` (the projection, then a :class:`BottleneckAdapter`); the dropout, residual add and
    LayerNorm that follow them in transformers' BERT are unchanged, so the adapter sits before them, as in the paper.
    Every parameter is then frozen except the adapters, the LayerNorms (if ``train_layer_norms``) and the modules
    named in ``trainable`` (PEFT's matching rule: a module name equal to the key or ending in ``"." + key``).

    Args:
        model: a transformers BERT-family model (``BertForSequenceClassification``, ``BertModel``, ...).
        bottleneck: k, the adapters' width.
        trainable: names of extra modules to train (the new task head); ``()`` for a bare encoder.
        train_layer_norms: also train every LayerNorm (Houlsby et al. do).
        activation, init_std: passed to :class:`BottleneckAdapter`.

    Returns:
        The same model object, with adapters on the device and dtype of the projections they follow.

    Raises:
        TypeError: the model is not a BERT-style encoder.
        RuntimeError: the model already has adapters (load a fresh model to change k: inserting twice would stack
            two adapters on each projection).
        ValueError: a bad ``bottleneck``, or a ``trainable`` key that matches no module.
    """
    _positive_int(bottleneck, "bottleneck")
    layers = _encoder_layers(model)
    if adapter_layers(model):
        raise RuntimeError("this model already has adapters; inserting again would stack a second adapter on each "
                           "projection. Load a fresh model (e.g. adaptation.new_classifier()) to try another k")
    trainable = (trainable,) if isinstance(trainable, str) else tuple(trainable)
    names = [name for name, _ in model.named_modules()]
    for key in trainable:
        if not any(matches_key(name, key) for name in names):
            raise ValueError(f"trainable key {key!r} matches no module of {type(model).__name__}; top-level modules: "
                             f"{[n for n in names if n and '.' not in n]} (use trainable=() for a bare encoder)")
    for layer in layers:
        for target in BERT_TARGETS:
            parent_name, _, child = target.rpartition(".")
            parent = layer.get_submodule(parent_name)
            dense = getattr(parent, child)
            adapter = BottleneckAdapter(dense.out_features, bottleneck, activation, init_std)
            adapter.to(device=dense.weight.device, dtype=dense.weight.dtype)
            setattr(parent, child, AdaptedLinear(dense, adapter))
    model.requires_grad_(False)
    for name, module in model.named_modules():
        if (isinstance(module, BottleneckAdapter) or (train_layer_norms and isinstance(module, nn.LayerNorm))
                or any(matches_key(name, key) for key in trainable)):
            module.requires_grad_(True)
    return model


def adapter_layers(model: nn.Module) -> list[tuple[str, BottleneckAdapter]]:
    """The ``(name, adapter)`` pairs of a model, in order (empty if it has none)."""
    return [(name, module) for name, module in model.named_modules() if isinstance(module, BottleneckAdapter)]


def adapter_parameter_count(n_layers: int, hidden_size: int, bottleneck: int, per_layer: int = 2) -> int:
    """Parameters added by Houlsby adapters: ``n_layers * per_layer * (2 n k + n + k)``.

    Each adapter has W_d (k x n) + its bias (k) + W_u (n x k) + its bias (n). The lecture's ``l * k * n * 2``
    counts the two matrices of one adapter per layer without biases.

    Args:
        n_layers: l, encoder layers; hidden_size: n; bottleneck: k; per_layer: adapters per layer (2 in Houlsby).

    Raises:
        TypeError / ValueError: a non-int or non-positive argument.
    """
    n_layers, n, k, per_layer = (_positive_int(v, name) for v, name in ((n_layers, "n_layers"),
                                 (hidden_size, "hidden_size"), (bottleneck, "bottleneck"), (per_layer, "per_layer")))
    return n_layers * per_layer * (2 * n * k + n + k)

