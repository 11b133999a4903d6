"""Exercise check for chapter "Encoders and decoders" (transformer_architecture): the parameters of one block.

A pre-LN block of width ``d`` and MLP width ``d_ff`` (``lab_utils.models.TransformerBlock``) holds the attention
projections W_Q, W_K, W_V, W_O (``4 d^2`` weights, ``4 d`` biases), the MLP ``d -> d_ff -> d`` (``2 d d_ff``
weights, ``d_ff + d`` biases) and two LayerNorms (``2 d`` each). The reference count is the real module's.
"""

from __future__ import annotations

from lab_utils.checks.feedback import StudentFunction, as_number, exercise_check, name_mistake
from lab_utils.checks.feedback import fail as _fail
from lab_utils.checks.feedback import success as _success
from lab_utils.models import TransformerBlock, TransformerConfig

__all__ = ["check_block_params"]

# (d_model, d_ff): d_ff = 4 d, and other widths (a model may choose any MLP width), heads dividing d.
_SIZES = ((8, 32), (16, 24), (48, 100), (384, 1536))


def _counted(d: int, d_ff: int) -> int:
    block = TransformerBlock(TransformerConfig(vocab_size=2, max_len=2, d_model=d, n_heads=4, d_ff=d_ff))
    return sum(p.numel() for p in block.parameters())


def _hint(got: float, d: int, f: int) -> str:
    """Name the mistake that explains ``got`` for width ``d`` and MLP width ``f``, or give the parts."""
    attention, mlp, norms = 4 * d * d + 4 * d, 2 * d * f + f + d, 4 * d
    wrong = {
        4 * d * d + 2 * d * f: "you counted the weight matrices only: every Linear also has a bias, and each "
                               "LayerNorm a weight and a bias of size d",
        attention + mlp: "the two LayerNorms are missing (each has a weight and a bias of size d)",
        attention + mlp + 2 * d: "one LayerNorm is missing: a pre-LN block has one before attention and one "
                                 "before the MLP",
        3 * d * d + 3 * d + mlp + norms: "the output projection W_O (d x d, plus its bias) is missing",
        12 * d * d + 13 * d: "you assumed d_ff = 4 d: use the d_ff argument (the MLP is d -> d_ff -> d)",
        attention + 2 * d * f + 2 * f + norms: "the MLP's biases are d_ff (first Linear) and d (second), not d_ff "
                                               "twice",
        attention + 2 * d * f + 2 * d + norms: "the MLP's biases are d_ff (first Linear) and d (second), not d "
                                               "twice",
    }
    return name_mistake(got, wrong, "attention 4 d^2 + 4 d, MLP 2 d d_ff + d_ff + d, two LayerNorms 2 d each")


@exercise_check
def check_block_params(fn: StudentFunction) -> None:
    """Check ``fn(d_model, d_ff) -> int`` against the parameter count of ``lab_utils.models.TransformerBlock``.

    Args:
        fn: the student's function, e.g. ``my_block_params``.

    Returns:
        True when every count is right; False (after printing a line) if ``fn`` is the stub.

    Raises:
        AssertionError: with the first wrong count and the part that is missing or miscounted.
    """
    for d, d_ff in _SIZES:
        call = f"{fn.name}(d_model={d}, d_ff={d_ff})"
        got = as_number(fn(d, d_ff), call)
        want = _counted(d, d_ff)
        if got != want:
            _fail(f"{call} returned {got:,.0f}; the block has {want:,}: {_hint(got, d, d_ff)}")
    _success(f"block parameter counts right for (d_model, d_ff) = {', '.join(map(str, _SIZES))}")
