"""How every exercise check reports: a failure names the mistake, a success prints one "✓" line.

Checks raise ``AssertionError`` on the first problem, with a message that tells the student what to change.
"""

from __future__ import annotations

from typing import NoReturn


def fail(message: str) -> NoReturn:
    """Stop the check with ``message`` (an ``AssertionError``, which Jupyter shows in red)."""
    raise AssertionError(message)


def success(message: str) -> None:
    """Print the one line a passing check shows."""
    print(f"✓ {message}")
