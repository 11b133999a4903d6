"""Widgets and plots, one module per concept: the only code that imports ipywidgets and matplotlib.

No other ``lab_utils`` module imports this subpackage. Notebooks import from here:
``from lab_utils.widgets import plot_attention, tokenizer_explorer``.
"""

from lab_utils.widgets.attention import plot_attention, plot_mask
from lab_utils.widgets.tokenizers import tokenizer_explorer, tokens_html

__all__ = ["plot_attention", "plot_mask", "tokenizer_explorer", "tokens_html"]
