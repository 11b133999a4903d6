"""Widgets and plots, one module per concept: the only code that imports ipywidgets and matplotlib.

No other ``lab_utils`` module imports this subpackage. Notebooks import from here:
``from lab_utils.widgets import plot_attention, tokenizer_explorer``.

attention.py (plot_mask, plot_attention), tokenizers.py (tokenizer_explorer, tokens_html),
training.py (plot_history), diagrams.py (draw_transformer_diagrams), embeddings.py (plot_similarity),
classification.py (plot_confusion_matrix, plot_trainer_log),
memory.py (plot_memory_vs_params, plot_memory_scaling, memory_calculator),
peft.py (plot_tradeoff, plot_rank_sweep, plot_panels), formats.py (bit_layout_html, format_explorer),
receptive_field.py (receptive_field_explorer);
static.py (DualView: a widget output that carries an HTML/JS stand-in for the book's static pages).
"""

from lab_utils.widgets.attention import plot_attention, plot_mask
from lab_utils.widgets.classification import plot_confusion_matrix, plot_trainer_log
from lab_utils.widgets.diagrams import draw_transformer_diagrams
from lab_utils.widgets.embeddings import plot_similarity
from lab_utils.widgets.formats import bit_layout_html, format_explorer
from lab_utils.widgets.memory import memory_calculator, plot_memory_scaling, plot_memory_vs_params
from lab_utils.widgets.peft import plot_panels, plot_rank_sweep, plot_tradeoff
from lab_utils.widgets.receptive_field import receptive_field_explorer
from lab_utils.widgets.tokenizers import tokenizer_explorer, tokens_html
from lab_utils.widgets.training import plot_history

__all__ = ["bit_layout_html", "draw_transformer_diagrams", "format_explorer", "memory_calculator", "plot_attention",
           "plot_confusion_matrix", "plot_history", "plot_mask", "plot_memory_scaling", "plot_memory_vs_params",
           "plot_panels", "plot_rank_sweep", "plot_similarity", "plot_trainer_log", "plot_tradeoff",
           "receptive_field_explorer", "tokenizer_explorer", "tokens_html"]
