"""Exercise check for chapter "Fine-tuning and its memory bill" (task_heads): the parameters of a classification head.

``BertForSequenceClassification`` reads the pooled ``[CLS]`` vector (the pooler, ``tanh(dense(h_CLS))``, belongs
to the pretrained ``BertModel``) and adds one new ``Linear(hidden_size, num_labels)``: ``hidden_size *
num_labels`` weights and ``num_labels`` biases. The reference count is the real module's.
"""

from __future__ import annotations

from lab_utils.checks.feedback import StudentFunction, as_number, exercise_check, name_mistake
from lab_utils.checks.feedback import fail as _fail
from lab_utils.checks.feedback import success as _success

__all__ = ["check_head_params"]

# (hidden_size, num_labels): MiniLM binary, BERT-base 3 classes, a tiny one, a regression head (1 output), and a
# size where hidden_size = num_labels, so that a count which swaps the two somewhere still meets a distinct case.
_SIZES = ((384, 2), (768, 3), (16, 7), (32, 1), (8, 8))


def _counted(hidden_size: int, num_labels: int) -> int:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=4, hidden_size=hidden_size, num_hidden_layers=1, num_attention_heads=1,
                        intermediate_size=4, max_position_embeddings=4, num_labels=num_labels)
    return sum(p.numel() for p in BertForSequenceClassification(config).classifier.parameters())


def _hint(got: float, h: int, n: int) -> str:
    """Name the mistake that explains ``got`` for hidden size ``h`` and ``n`` labels, or give the rule."""
    head, pooler = h * n + n, h * h + h
    wrong = {
        h * n: "the Linear also has a bias: one per label",
        head + pooler: "the pooler (dense h x h + bias, then tanh) is part of the pretrained BertModel, not of the "
                       "new head: count the classifier only",
        h * n + h: "the bias has one value per output (num_labels), not per input (hidden_size)",
        h * (n - 1) + n - 1: "the head has num_labels outputs, not num_labels - 1: one score per label, even for "
                             "two classes",
        h + 1: "the head has num_labels outputs, one score per label (even for two classes), not a single score",
        h * h + h: "that is the pooler's dense layer (h x h): the classifier maps hidden_size to num_labels",
        2 * (h * n + n): "the head has one Linear, not two",
    }
    return name_mistake(got, wrong, "the head is one Linear(hidden_size, num_labels): hidden_size * num_labels "
                                     "weights + num_labels biases")


@exercise_check
def check_head_params(fn: StudentFunction) -> None:
    """Check ``fn(hidden_size, num_labels) -> int`` against ``BertForSequenceClassification``'s classifier.

    Args:
        fn: the student's function, e.g. ``my_head_params``.

    Returns:
        True when every count is right; False (after printing a line) if ``fn`` is the stub.

    Raises:
        AssertionError: with the first wrong count and the likely mistake (no bias, pooler counted, ...).
    """
    for h, n in _SIZES:
        call = f"{fn.name}(hidden_size={h}, num_labels={n})"
        got = as_number(fn(h, n), call)
        want = _counted(h, n)
        if got != want:
            _fail(f"{call} returned {got:,.0f}; the head has {want:,} trainable parameters: {_hint(got, h, n)}")
    _success(f"head parameter counts right for (hidden_size, num_labels) = {', '.join(map(str, _SIZES))}")
