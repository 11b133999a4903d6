"""Exercise checks for chapter "Encoders and decoders": BERT's MLM masking and the mean NLL of a language model.

Conventions follow ``lab_utils.objectives``: labels are ``-100`` (``IGNORE_INDEX``) where there is no target; losses
are in nats (natural log), averaged over labelled tokens. The data come from local generators with fixed seeds.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lab_utils.checks.feedback import StudentFunction, as_number, exercise_check
from lab_utils.checks.feedback import fail as _fail
from lab_utils.checks.feedback import success as _success
from lab_utils.objectives import IGNORE_INDEX

__all__ = ["check_mean_nll", "check_mlm_masking"]


def _mlm_batch() -> tuple[Tensor, Tensor]:
    """200 x 256 ordinary ids (>= 10) with [CLS] first, [SEP] last and padding after; and the special-token mask."""
    g = torch.Generator().manual_seed(1234)
    B, T = 200, 256
    ids = torch.randint(10, 1000, (B, T), generator=g)  # (B, T)
    lengths = torch.randint(T // 2, T + 1, (B,), generator=g)  # (B,) real length of each row, the rest is padding
    pos = torch.arange(T)[None, :]  # (1, T)
    ids[:, 0] = 1  # [CLS]
    ids[pos == (lengths[:, None] - 1)] = 2  # [SEP]
    ids[pos >= lengths[:, None]] = 0  # [PAD]
    return ids, torch.isin(ids, torch.tensor([0, 1, 2, 3]))


@exercise_check
def check_mlm_masking(fn: StudentFunction) -> None:
    """Check a BERT masking function with the signature of ``lab_utils.objectives.mask_tokens``.

    It is called as ``fn(input_ids, mask_token_id=, vocab_size=, special_ids=, mlm_probability=0.15, generator=)``
    on a batch of 200 x 256 tokens and must select ~15% of the non-special tokens, turn 80% of those into [MASK],
    10% into a token drawn uniformly from ``[0, vocab_size)``, leave 10% unchanged, label only the selected
    positions (``-100`` elsewhere), and draw all its randomness from ``generator``.

    Returns:
        True when every rule holds; False (after printing a line) if ``fn`` is the stub.

    Raises:
        AssertionError: saying which rule is broken and by how much.
    """
    vocab_size, mask_id, p = 1000, 3, 0.15
    ids, special = _mlm_batch()
    original = ids.clone()

    def call(seed: int) -> tuple[Tensor, Tensor]:
        out = fn(ids, mask_token_id=mask_id, vocab_size=vocab_size, special_ids=[0, 1, 2, 3], mlm_probability=p,
                 generator=torch.Generator().manual_seed(seed))  # fmt: skip
        if not (isinstance(out, tuple) and len(out) == 2 and all(isinstance(t, Tensor) for t in out)):
            _fail(f"{fn.name} must return a tuple (inputs, labels) of two tensors")
        return out

    global_state = torch.get_rng_state()
    inputs, labels = call(0)
    if not torch.equal(torch.get_rng_state(), global_state):
        _fail(
            f"{fn.name} used torch's global random generator (torch.rand/randint without `generator=`, or "
            "torch.manual_seed): draw all randomness from `generator`, e.g. torch.rand(shape, generator=generator)"
        )
    if not torch.equal(ids, original):
        _fail(f"{fn.name} modified input_ids in place; work on a copy (`input_ids.clone()`)")
    for name, t in (("inputs", inputs), ("labels", labels)):
        if t.shape != ids.shape or t.is_floating_point():
            _fail(f"{name} must be an integer tensor shaped like input_ids {tuple(ids.shape)}, got {t.dtype} "
                  f"{tuple(t.shape)}")  # fmt: skip
    selected = labels != IGNORE_INDEX  # (B, T)
    if selected.float().mean() > 0.5:  # ~11% expected
        _fail(
            f"labels are set at {selected.float().mean():.0%} of the positions: every position that was not "
            "selected needs label -100 (IGNORE_INDEX), e.g. labels = torch.where(selected, input_ids, -100)"
        )
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
    if all(torch.equal(a, b) for a, b in zip((inputs, labels), call(1), strict=True)):
        _fail(f"{fn.name} gave the same result for generators seeded 0 and 1: draw from the `generator` it is given "
              "(do not create or reseed your own)")  # fmt: skip

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
    randomised = selected & ~became_mask & ~unchanged  # (B, T)
    within("fraction of selected tokens replaced by [MASK]", int(became_mask.sum()) / n_sel, 0.8, n_sel,
           "BERT replaces 80% of the selected tokens by [MASK]")  # fmt: skip
    within("fraction of selected tokens left unchanged", int(unchanged.sum()) / n_sel, 0.1, n_sel,
           "BERT keeps 10% of the selected tokens unchanged (they still get a label)")  # fmt: skip
    within("fraction of selected tokens replaced by a random token", int(randomised.sum()) / n_sel, 0.1, n_sel,
           "BERT replaces 10% of the selected tokens by a random token")  # fmt: skip
    _check_random_replacements(inputs, ids, randomised, vocab_size)
    _success(f"MLM masking: {n_sel / n_eligible:.1%} of {n_eligible} tokens selected, 80/10/10 split, random tokens "
             "uniform, labels -100 elsewhere, special tokens untouched, randomness from `generator`")  # fmt: skip


def _check_random_replacements(inputs: Tensor, ids: Tensor, randomised: Tensor, vocab_size: int) -> None:
    """The ~580 random replacements must look uniform on [0, vocab_size) and independent of the sentence."""
    drawn = inputs[randomised]  # (n,)
    n = drawn.numel()
    rule = "draw each one uniformly from [0, vocab_size), e.g. torch.randint(vocab_size, shape, generator=generator)"
    if ((drawn < 0) | (drawn >= vocab_size)).any():
        _fail(f"a random replacement is outside [0, vocab_size={vocab_size}): {rule}")
    top_count = int(drawn.bincount().max())
    if top_count > 12:  # uniform: ~0.6 expected per id, P(max >= 13) < 1e-10
        top = int(drawn.bincount().argmax())
        _fail(f"{top_count} of the {n} random replacements are the same id ({top}): {rule}")
    low = (drawn < vocab_size // 2).float().mean().item()
    if abs(low - 0.5) > 5 * math.sqrt(0.25 / n):  # 5 std of a binomial rate
        _fail(f"{low:.0%} of the random replacements are in the lower half of the vocabulary, expected ~50%: {rule}")
    # A uniform draw equals one of the original ids of its row with probability (distinct ids in the row) / V.
    rows = randomised.nonzero()[:, 0]  # (n,) row of each replacement
    in_row = (ids[rows] == drawn[:, None]).any(dim=1).float().mean().item()
    distinct = torch.tensor([ids[r].unique().numel() / vocab_size for r in rows.unique().tolist()]).max().item()
    if in_row > distinct + 5 * math.sqrt(distinct * (1 - distinct) / n):
        left = ids.roll(1, dims=1)[randomised]  # (n,) the original id on the left of each replacement
        what = "the token on their left" if (left == drawn).float().mean() > 0.5 else "a token of the same sequence"
        _fail(
            f"{in_row:.0%} of the random replacements are copies of {what} (expected < {distinct:.0%} by chance): "
            f"{rule}"
        )


def _nll_batches(seed: int) -> list[tuple[Tensor, Tensor]]:
    """Three batches of different sizes, padding and loss levels, so that weightings that differ give different means.

    Batch 0 has many targets and a confident model (low loss), batch 2 few targets and a near-uniform one (high
    loss): the mean of the three batch means is far from the token-weighted mean.
    """
    g = torch.Generator().manual_seed(seed)
    V, batches = 13, []
    for B, T, n_real, confidence in ((6, 9, 9, 6.0), (3, 7, 4, 1.0), (2, 11, 2, 0.0)):
        labels = torch.randint(V, (B, T), generator=g)  # (B, T)
        lengths = torch.randint(1, n_real + 1, (B,), generator=g)
        lengths[0] = n_real
        labels[torch.arange(T)[None, :] >= lengths[:, None]] = IGNORE_INDEX  # padding: no target
        logits = torch.randn(B, T, V, generator=g) + 3.0  # (B, T, V); +3: raw logits are far from log-probs
        logits += confidence * F.one_hot(labels.clamp(min=0), V)  # the right token gets `confidence` more
        batches.append((logits, labels))
    return batches


def _nll_candidates(batches: list[tuple[Tensor, Tensor]]) -> dict[str, float]:
    """The right answer ("") and typical wrong ones, each named by its mistake."""
    sums, counts, sizes, raw = [], [], [], []
    for logits, labels in batches:
        flat_logits, flat_labels = logits.double().flatten(0, 1), labels.flatten()  # (B*T, V), (B*T,)
        sums.append(F.cross_entropy(flat_logits, flat_labels, reduction="sum").item())  # -100 ignored
        counts.append(int((flat_labels != IGNORE_INDEX).sum()))
        sizes.append(flat_labels.numel())
        raw.append(-F.nll_loss(flat_logits, flat_labels, reduction="sum").item())  # sum of raw logits at labels
    total, n = sum(sums), sum(counts)
    return {
        "": total / n,
        "you averaged the per-batch means: weight each batch by its number of labelled tokens (sum of NLLs over all "
        "batches / number of labelled tokens)": sum(s / c for s, c in zip(sums, counts, strict=True)) / len(sums),
        "you divided by every position, -100 ones included: count only labelled tokens (labels != -100)": total
        / sum(sizes),
        "you returned bits (log base 2): use the natural log (nats), as F.cross_entropy does": total / n / math.log(2),
        "you returned the sum of the NLLs: divide by the number of labelled tokens": total,
        "you used the raw logits as log-probabilities: apply log_softmax first (F.cross_entropy does it for you)": (
            -sum(raw) / n
        ),
    }


@exercise_check
def check_mean_nll(fn: StudentFunction) -> None:
    """Check ``fn(batches) -> mean NLL`` in nats per labelled token over all batches (token-weighted).

    ``batches`` is a list of ``(logits (B, T, V), labels (B, T))`` with ``-100`` where there is no target; batches
    differ in B, T and number of targets. A float or a 0-d tensor (even one that requires grad) is accepted.

    Returns:
        True when the value is right on two data sets; False (after printing a line) if ``fn`` is the stub.

    Raises:
        AssertionError: with the value returned, the one expected and, when recognisable, the mistake.
    """
    rel_tol = 1e-4  # float32 log_softmax over 13 logits: ~1e-6 relative error; wrong answers differ by > 10%
    for seed in (0, 1):
        batches = _nll_batches(seed)
        copies = [(logits.clone(), labels.clone()) for logits, labels in batches]  # the student may modify them
        call = f"{fn.name}(batches)"
        got = as_number(fn(copies), call)
        candidates = _nll_candidates(batches)
        want = candidates.pop("")
        if math.isclose(got, want, rel_tol=rel_tol):
            continue
        hint = next((h for h, v in candidates.items() if math.isclose(got, v, rel_tol=rel_tol)),
                    "mean NLL = (sum over all batches of -log softmax(logits)[label] at labelled positions) / "
                    "(number of labelled positions)")  # fmt: skip
        _fail(f"{call} returned {got:.6g}, expected {want:.6g} nats per labelled token: {hint}")
    _success("mean NLL: nats per labelled token, weighted by tokens over all batches, -100 positions ignored")
