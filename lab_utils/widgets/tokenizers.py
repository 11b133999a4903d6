"""Tokenizer explorer: how a tokenizer cuts text, as coloured chips (chapter 00, "First look").

Built so the static site stays useful without a kernel: precomputed views sit in tabs (tabs switch in the
browser), and a live text box re-computes them when a kernel runs the notebook (Colab, local).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

import ipywidgets as w

# Alternating token backgrounds: pastel enough for black text, distinct enough to see boundaries.
TOKEN_COLOURS = ("#fde2b5", "#c8e6f5", "#d9f2c9", "#f6cfe4", "#e4dcf6")


def tokens_html(tokenizer, text: str) -> str:
    """HTML showing how ``tokenizer`` cuts ``text``: one coloured chip per token, the count in front.

    Args:
        tokenizer: a Hugging Face tokenizer.
        text: the text to tokenize (special tokens are not added).

    Returns:
        An HTML fragment.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    chips = "".join(
        f'<span title="id {i}" style="background:{TOKEN_COLOURS[k % len(TOKEN_COLOURS)]};padding:1px 3px;'
        f'margin:1px;border-radius:3px;font-family:monospace;white-space:pre">{html.escape(tok)}</span>'
        for k, (tok, i) in enumerate(zip(tokens, ids, strict=True))
    )
    return f"<div style='line-height:2'><b>{len(ids)} tokens</b> &nbsp;{chips}</div>"


def _comparison_html(tokenizers: Mapping[str, object], text: str) -> str:
    rows = "".join(f"<p style='margin:4px 0'><i>{html.escape(name)}</i></p>{tokens_html(tok, text)}"
                   for name, tok in tokenizers.items())
    return f"<div><p><code>{html.escape(text)}</code></p>{rows}</div>"


def tokenizer_explorer(tokenizers: Mapping[str, object], examples: Sequence[str]) -> w.VBox:
    """Compare tokenizers side by side.

    Args:
        tokenizers: display name -> tokenizer, e.g. ``{"MiniLM (WordPiece)": enc_tok, "SmolLM2 (BPE)": dec_tok}``.
        examples: texts shown in tabs (precomputed, so they also work on the static site).

    Returns:
        A widget: a text box whose tokenization updates as you type (needs a running kernel), above one tab
        per example.
    """
    if not tokenizers or not examples:
        raise ValueError("tokenizer_explorer needs at least one tokenizer and one example text")
    box = w.Text(value=examples[0], description="Your text:", layout=w.Layout(width="95%"),
                 continuous_update=False)
    live = w.HTML(_comparison_html(tokenizers, box.value))
    box.observe(lambda change: setattr(live, "value", _comparison_html(tokenizers, change["new"])), names="value")
    tabs = w.Tab(children=[w.HTML(_comparison_html(tokenizers, text)) for text in examples],
                 titles=[f"Example {k + 1}" for k in range(len(examples))])
    note = w.HTML("<small>Type in the box (with a running kernel) or switch tabs to compare tokenizers.</small>")
    return w.VBox([box, live, note, tabs])
