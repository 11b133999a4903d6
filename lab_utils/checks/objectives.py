"""Exercise checks for chapter "Encoders and decoders": BERT's MLM masking and the perplexity.

Conventions follow ``lab_utils.objectives``: labels are ``-100`` where there is no target.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from lab_utils.checks.feedback import fail as _fail
from lab_utils.checks.feedback import success as _success
from lab_utils.objectives import IGNORE_INDEX

__all__ = ["check_mlm_masking", "check_perplexity"]


def check_mlm_masking(fn: Callable[..., tuple[Tensor, Tensor]]) -> None:
    """Check a BERT masking function with the signature of `lab_utils.objectives.mask_tokens`.

    It is called as `fn(input_ids, mask_token_id=, vocab_size=, special_ids=, mlm_probability=0.15,
    generator=)` on a batch of 200 x 256 tokens and must select ~15% of the non-special tokens, turn 80% of
    those into [MASK], 10% into a random token, leave 10% unchanged, and label only the selected positions.

    Raises:
        AssertionError: saying which rule is broken and by how much.
    """
    vocab_size, pad_id, cls_id, sep_id, mask_id = 1000, 0, 1, 2, 3
    special_ids = [pad_id, cls_id, sep_id, mask_id]
    B, T, p = 200, 256, 0.15
    g = torch.Generator().manual_seed(1234)
    ids = torch.randint(10, vocab_size, (B, T), generator=g)  # (B, T) ordinary tokens: ids >= 10
    lengths = torch.randint(T // 2, T + 1, (B,), generator=g)  # (B,) real length of each row, the rest is padding
    pos = torch.arange(T)[None, :]  # (1, T)
    ids[:, 0] = cls_id
    ids[pos == (lengths[:, None] - 1)] = sep_id
    ids[pos >= lengths[:, None]] = pad_id
    special = torch.isin(ids, torch.tensor(special_ids))  # (B, T)
    original = ids.clone()

    def call(seed: int) -> tuple[Tensor, Tensor]:
        out = fn(ids, mask_token_id=mask_id, vocab_size=vocab_size, special_ids=special_ids,
                 mlm_probability=p, generator=torch.Generator().manual_seed(seed))  # fmt: skip
        if not (isinstance(out, tuple) and len(out) == 2 and all(isinstance(t, Tensor) for t in out)):
            _fail("fn must return a tuple (inputs, labels) of two tensors")
        return out

    inputs, labels = call(0)
    if not torch.equal(ids, original):
        _fail("fn modified input_ids in place; work on a copy (`input_ids.clone()`)")
    for name, t in (("inputs", inputs), ("labels", labels)):
        if t.shape != ids.shape or t.is_floating_point():
            _fail(f"{name} must be an integer tensor shaped like input_ids {tuple(ids.shape)}, got {t.dtype} "
                  f"{tuple(t.shape)}")  # fmt: skip
    selected = labels != IGNORE_INDEX  # (B, T)
    if (selected & special).any():
        _fail("a special token ([PAD], [CLS], [SEP] or [MASK]) was selected; exclude special_ids before sampling")
    if (inputs[special] != ids[special]).any():
        _fail("a special token was changed in inputs; special tokens must stay as they are")
    if not torch.equal(labels[selected], ids[selected]):
        _fail("labels at selected positions must be the original token ids (what the model should recover)")
    if not torch.equal(inputs[~selected], ids[~selected]):
        _fail("a position with label -100 was changed in inputs: only selected positions may be corrupted, and "
              "every selected position needs its original id as label (use -100 elsewhere)")  # fmt: skip
    inputs_again, labels_again = call(0)
    if not (torch.equal(inputs, inputs_again) and torch.equal(labels, labels_again)):
        _fail("two calls with the same generator seed gave different results; draw all randomness from `generator`")

    # Tolerances: each count is binomial, so a rate estimated from n trials has std sqrt(q (1 - q) / n). We accept
    # 5 std (two-sided false alarm ~6e-7). With ~39 000 eligible tokens the selection tolerance is ~0.009, and with
    # ~5 800 selected tokens the 80/10/10 tolerances are ~0.026 and ~0.020: far below the 0.05 gap of a 20% rate.
    def within(name: str, got: float, want: float, n: int, hint: str) -> None:
        tol = 5 * math.sqrt(want * (1 - want) / n)
        if abs(got - want) > tol:
            _fail(f"{name} is {got:.3f}, expected {want:.3f} ± {tol:.3f}; {hint}")

    n_eligible, n_sel = int((~special).sum()), int(selected.sum())
    within("fraction of non-special tokens selected", n_sel / n_eligible, p, n_eligible,
           "select each non-special token with probability mlm_probability")  # fmt: skip
    # A random replacement equals [MASK] or the original with probability 1/vocab_size each (0.0001 shift).
    became_mask = (inputs == mask_id) & selected
    unchanged = (inputs == ids) & selected
    within("fraction of selected tokens replaced by [MASK]", int(became_mask.sum()) / n_sel, 0.8, n_sel,
           "BERT replaces 80% of the selected tokens by [MASK]")  # fmt: skip
    within("fraction of selected tokens left unchanged", int(unchanged.sum()) / n_sel, 0.1, n_sel,
           "BERT keeps 10% of the selected tokens unchanged (they still get a label)")  # fmt: skip
    within("fraction of selected tokens replaced by a random token", int((selected & ~became_mask & ~unchanged).sum())
           / n_sel, 0.1, n_sel, "BERT replaces 10% of the selected tokens by a random token")  # fmt: skip
    _success(f"MLM masking: {n_sel / n_eligible:.1%} of {n_eligible} tokens selected, 80/10/10 split, labels -100 "
             "elsewhere, special tokens untouched")  # fmt: skip


def check_perplexity(fn: Callable[[float], float]) -> None:
    """Check `fn(loss) -> perplexity` against `exp(loss)` (loss in nats, as `F.cross_entropy` returns).

    Raises:
        AssertionError: with the first loss whose perplexity is wrong and a hint on the likely mistake.
    """
    rel_tol = 1e-5  # float32 exp has ~1e-7 relative error; 1e-5 accepts a tensor result, rejects a wrong formula
    cases = [0.0, 1.0, math.log(2), math.log(50257), 2.5]  # 50257: GPT-2's vocabulary, a uniform guess over it
    for loss in cases:
        got = fn(loss)
        try:
            got = float(got)
        except (TypeError, ValueError):
            _fail(f"fn({loss}) returned {type(got).__name__}; return a number (float or 0-d tensor)")
        want = math.exp(loss)
        if math.isclose(got, want, rel_tol=rel_tol):
            continue
        hint = "perplexity = exp(mean negative log-likelihood)"
        if math.isclose(got, 2**loss, rel_tol=rel_tol):
            hint = "you used 2**loss, but the loss is in nats (natural log): use exp"
        elif math.isclose(got, math.exp(-loss), rel_tol=rel_tol):
            hint = "you used exp(-loss): the loss is already the *negative* log-likelihood"
        elif math.isclose(got, loss, rel_tol=rel_tol):
            hint = "you returned the loss itself; exponentiate it"
        _fail(f"perplexity({loss:.4f}) = {got:.6g}, expected {want:.6g}: {hint}")
    _success("perplexity = exp(loss): loss 0 -> 1, loss log(V) -> V")
