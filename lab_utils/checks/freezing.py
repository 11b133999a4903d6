"""Exercise check for chapter "Parameter-efficient fine-tuning" (last_layers): what trains when only the last k
layers of a BERT classifier (plus its pooler and classifier) are trained.

One BERT layer of width ``h`` and feed-forward width ``f`` holds Q, K, V and the attention output (``4 h^2 + 4 h``),
a LayerNorm (``2 h``), the feed-forward ``h -> f -> h`` (``2 h f + f + h``) and a second LayerNorm (``2 h``); the
pooler is ``Linear(h, h)``, the classifier ``Linear(h, num_labels)``. The reference counts the real
``BertForSequenceClassification`` after ``lab_utils.freezing.freeze_all_but_last``.
"""

from __future__ import annotations

import torch

from lab_utils.checks.feedback import StudentFunction, as_number, exercise_check, name_mistake
from lab_utils.checks.feedback import fail as _fail
from lab_utils.checks.feedback import success as _success
from lab_utils.freezing import freeze_all_but_last

__all__ = ["check_last_layers_params"]

# (k, hidden_size, intermediate_size, num_labels): MiniLM with 2 layers and with none (the head alone), a tiny
# config whose f is not 4 h, and one with 3 labels.
_CASES = ((2, 384, 1536, 2), (0, 384, 1536, 2), (3, 16, 24, 5), (1, 8, 40, 3))


def _counted(k: int, h: int, f: int, n: int) -> int:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=4, hidden_size=h, num_hidden_layers=k + 1, num_attention_heads=1,
                        intermediate_size=f, max_position_embeddings=4, num_labels=n)
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        model = freeze_all_but_last(BertForSequenceClassification(config), k)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _hint(got: float, k: int, h: int, f: int, n: int) -> str:
    """Name the mistake that explains ``got``, or give the parts."""
    layer = 4 * h * h + 4 * h + 2 * h + 2 * h * f + f + h + 2 * h
    pooler, classifier = h * h + h, h * n + n
    head = pooler + classifier
    wrong = [
        (k * layer + classifier, "the pooler (Linear(h, h) on [CLS]) is missing: freeze_all_but_last trains it with "
                                 "the classifier"),
        (k * layer + pooler, "the classifier (Linear(h, num_labels)) is missing"),
        (k * layer, "the head (pooler h*h + h and classifier h*num_labels + num_labels) trains too, even for k = 0"),
        (k * (layer - 4 * h) + head, "each layer's two LayerNorms (2 h each) are missing"),
        (k * (4 * h * h + 2 * h * f + 4 * h) + h * h + h * n, "the biases are missing: every Linear has one"),
        (k * (12 * h * h + 13 * h) + head, "you assumed f = 4 h: use intermediate_size for the feed-forward"),
        ((k + 1) * layer + head, "one layer too many: train the last k layers"),
        ((k - 1) * layer + head, "one layer too few: train the last k layers"),
        (k * (4 * h * h + 6 * h) + head, "the feed-forward (h -> f -> h, 2 h f + f + h) is part of each layer"),
    ]
    return name_mistake(got, wrong, "k * (4 h^2 + 2 h f + 9 h + f) + pooler (h^2 + h) + classifier (h n + n)")


@exercise_check
def check_last_layers_params(fn: StudentFunction) -> None:
    """Check ``fn(k, hidden_size, intermediate_size, num_labels) -> int``: the trainable parameters of a BERT
    classifier whose last ``k`` layers, pooler and classifier train.

    Args:
        fn: the student's function, e.g. ``my_last_layers_params``.

    Returns:
        True when every count is right; False (after printing a line) if ``fn`` is the stub.

    Raises:
        AssertionError: with the first wrong count and the likely mistake (pooler or classifier forgotten,
            LayerNorms or biases missing, f = 4 h assumed, one layer too many or too few).
    """
    for k, h, f, n in _CASES:
        call = f"{fn.name}(k={k}, hidden_size={h}, intermediate_size={f}, num_labels={n})"
        got = as_number(fn(k, h, f, n), call)
        want = _counted(k, h, f, n)
        if got != want:
            _fail(f"{call} returned {got:,.0f}; {want:,} parameters train: {_hint(got, k, h, f, n)}")
    _success("trainable counts right for the last k layers + pooler + classifier, k = "
             f"{', '.join(str(c[0]) for c in _CASES)}")
