"""How every exercise check behaves: one "✓" line on success, an ``AssertionError`` naming the first mistake.

A check is written as ``@exercise_check def check_x(fn: StudentFunction) -> None`` and called as ``check_x(my_x)``:
it returns True when the answer passes, raises ``AssertionError`` (via ``fail``) on the first mistake, and returns
False after printing "✗ my_x is not written yet ..." when ``my_x`` still raises ``NotImplementedError`` (the stub), so
"run all" goes on. Any other exception raised by the student's function propagates unchanged, so the traceback ends
on the student's line; on Python >= 3.11 a note names the call that failed (the arguments' shapes), which is what the
student needs and what re-raising as another type would hide. Checks neither depend on nor change the global RNGs:
they draw their data from local generators, and ``exercise_check`` restores torch's, Python's and NumPy's states.
"""

from __future__ import annotations

import contextlib
import functools
import math
import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NoReturn

import torch
from torch import Tensor

__all__ = ["StudentFunction", "as_number", "exercise_check", "fail", "name_mistake", "success"]


def fail(message: str) -> NoReturn:
    """Stop the check with ``message`` (an ``AssertionError``, which Jupyter shows in red)."""
    raise AssertionError(message)


def success(message: str) -> None:
    """Print the one line a passing check shows."""
    print(f"✓ {message}")


class _NotWritten(Exception):
    """Raised by ``StudentFunction`` when the student's function is still the ``NotImplementedError`` stub."""


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"tensor{tuple(value.shape)} {str(value.dtype).removeprefix('torch.')}"
    if isinstance(value, (list, tuple)) and len(value) > 3:
        return f"{type(value).__name__} of {len(value)}"
    return repr(value)


class StudentFunction:
    """The student's function as a check calls it: its name for messages, and a note on what it was called with.

    Args:
        fn: the student's function.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        if not callable(fn):
            fail(f"pass your function itself (without calling it), got {type(fn).__name__}")
        self.fn = fn
        self.name: str = getattr(fn, "__name__", type(fn).__name__)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self.fn(*args, **kwargs)
        except NotImplementedError as e:
            raise _NotWritten(self.name) from e
        except Exception as e:
            if hasattr(e, "add_note"):  # Python >= 3.11
                shown = [_describe(a) for a in args] + [f"{k}={_describe(v)}" for k, v in kwargs.items()]
                e.add_note(f"(raised inside {self.name}, called by the check as {self.name}({', '.join(shown)}))")
            raise


def as_number(value: Any, call: str) -> float:
    """``value`` as a float if it is number-like (int, float, NumPy scalar, one-element tensor), else ``fail``."""
    if isinstance(value, (bool, str, bytes)) or (isinstance(value, Tensor) and value.numel() != 1):
        shape = f" of shape {tuple(value.shape)}" if isinstance(value, Tensor) else ""
        fail(f"{call} returned a {type(value).__name__}{shape}; return one number (a float or a 0-d tensor)")
    try:
        return float(value.detach() if isinstance(value, Tensor) else value)
    except (TypeError, ValueError):
        pass
    fail(f"{call} returned a {type(value).__name__}; return one number (a float or a 0-d tensor)")


def name_mistake(
    got: float,
    mistakes: Mapping[float, str] | Iterable[tuple[float, str]],
    default: str,
    *,
    rel_tol: float = 1e-9,
) -> str:
    """The hint of the first typical mistake whose value ``got`` matches, or ``default`` (the rule) if none does.

    Args:
        got: the student's (wrong) answer, as a number.
        mistakes: what each typical mistake would return -> the hint that names it, tried in order; a mapping or
            ``(value, hint)`` pairs (pairs keep two mistakes that happen to give the same value).
        default: what to say when no mistake explains ``got``, usually the rule itself.
        rel_tol: relative tolerance of the match. The default (1e-9) makes integer counts below ~10**8 match
            exactly while forgiving float rounding; pass a looser one for answers computed in several steps.

    Returns:
        The hint to show after "expected ...: ".
    """
    pairs = mistakes.items() if isinstance(mistakes, Mapping) else mistakes
    for value, hint in pairs:
        if math.isclose(got, value, rel_tol=rel_tol):
            return hint
    return default


@contextlib.contextmanager
def _global_rngs_kept() -> Iterator[None]:
    """Restore torch's (CPU and initialised CUDA), Python's and NumPy's global RNG states on exit."""
    py_state = random.getstate()
    np_random = None
    with contextlib.suppress(ImportError):
        import numpy as np

        np_random = np.random
    np_state = np_random.get_state() if np_random is not None else None
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=cuda):
            yield
    finally:
        random.setstate(py_state)
        if np_random is not None:
            np_random.set_state(np_state)


def exercise_check(check: Callable[[StudentFunction], None]) -> Callable[[Callable[..., Any]], bool]:
    """Turn ``check(student)`` (which calls ``fail`` on a mistake) into a notebook check returning True/False.

    The wrapped check takes the student's function, returns True when ``check`` finishes, prints the
    "not written yet" line and returns False when the function raises ``NotImplementedError``, and lets
    ``AssertionError`` (the diagnosis) and the student's own exceptions propagate.
    """

    @functools.wraps(check)
    def run(fn: Callable[..., Any]) -> bool:
        student = StudentFunction(fn)
        try:
            with _global_rngs_kept():
                check(student)
        except _NotWritten:
            print(
                f"✗ {student.name} is not written yet: replace `raise NotImplementedError` with your code "
                "and run the cell again"
            )
            return False
        return True

    return run
