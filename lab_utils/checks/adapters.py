"""Exercise check for chapter "Parameter-efficient fine-tuning" (adapters): the parameters Houlsby adapters add.

Each adapter is a bottleneck ``x + W_u sigma(W_d x)`` with ``W_d`` (k x n) and ``W_u`` (n x k), each Linear with its
bias: ``2 n k + k + n`` parameters; Houlsby et al. (2019) put two in every layer (after the attention output and
after the feed-forward output). The lecture's ``l * k * n * 2`` counts one adapter per layer without biases. The
reference is ``lab_utils.adapters.adapter_parameter_count``.
"""

from __future__ import annotations

from lab_utils.adapters import adapter_parameter_count
from lab_utils.checks.feedback import StudentFunction, as_number, exercise_check, name_mistake
from lab_utils.checks.feedback import fail as _fail
from lab_utils.checks.feedback import success as _success

__all__ = ["check_adapter_params"]

# (n_layers, hidden_size, bottleneck): BERT-base with the lecture's k = 64, MiniLM, BERT-large, a tiny one
_SIZES = ((12, 768, 64), (6, 384, 16), (24, 1024, 64), (2, 10, 3))


def _hint(got: float, l: int, n: int, k: int) -> str:  # noqa: E741 (the lecture's letter for the layers)
    """Name the mistake that explains ``got`` for ``l`` layers, width ``n`` and bottleneck ``k``."""
    one = 2 * n * k + n + k  # one adapter: W_d, its k biases, W_u, its n biases
    wrong = [
        (l * k * n * 2, "that is the lecture's l * k * n * 2: the two matrices of one adapter per layer, without "
                        "biases; Houlsby et al. put two adapters in each layer, and each Linear has a bias"),
        (2 * l * 2 * n * k, "the biases are missing: W_d has k, W_u has n"),
        (l * one, "that is one adapter per layer; Houlsby et al. put two (after attention and after the "
                  "feed-forward)"),
        (2 * l * (2 * n * k + 2 * k), "the biases: W_d (n -> k) has k, W_u (k -> n) has n, not k each"),
        (2 * l * (2 * n * k + 2 * n), "the biases: W_d (n -> k) has k, W_u (k -> n) has n, not n each"),
        (2 * l * (one + 2 * n), "the LayerNorm (2 n) is not part of the adapter (insert_adapters trains the "
                                "existing LayerNorms too, but they are the model's own parameters)"),
        (2 * l * one + 4 * l * n, "the LayerNorms (2 n each) are the model's own parameters, not the adapters'"),
        (2 * one, "you counted the adapters of one layer: multiply by n_layers"),
    ]
    return name_mistake(got, wrong, "n_layers * 2 adapters * (2 n k weights + k + n biases)")


@exercise_check
def check_adapter_params(fn: StudentFunction) -> None:
    """Check ``fn(n_layers, hidden_size, bottleneck) -> int``: parameters of Houlsby adapters (two per layer).

    Args:
        fn: the student's function, e.g. ``my_adapter_params``.

    Returns:
        True when every count is right; False (after printing a line) if ``fn`` is the stub.

    Raises:
        AssertionError: with the first wrong count and the likely mistake (the lecture's l * k * n * 2, biases
            forgotten, one adapter per layer, LayerNorms counted).
    """
    for l, n, k in _SIZES:  # noqa: E741
        call = f"{fn.name}(n_layers={l}, hidden_size={n}, bottleneck={k})"
        got = as_number(fn(l, n, k), call)
        want = adapter_parameter_count(l, n, k)
        if got != want:
            _fail(f"{call} returned {got:,.0f}; Houlsby adapters add {want:,}: {_hint(got, l, n, k)}")
    _success(f"adapter parameter counts right for (n_layers, hidden_size, bottleneck) = "
             f"{', '.join(map(str, _SIZES))}")
