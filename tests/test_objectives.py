"""Tests for lab_utils.objectives: BERT masking statistics, next-token shift, perplexity, training loop."""

import math

import pytest
import torch

from lab_utils.models import TinyTransformer, TransformerConfig
from lab_utils.objectives import (
    IGNORE_INDEX,
    cross_entropy_loss,
    evaluate_loss,
    mask_tokens,
    perplexity,
    shift_for_next_token,
    train,
)

V, PAD, CLS, SEP, MASK = 500, 0, 1, 2, 3
SPECIAL = [PAD, CLS, SEP, MASK]


def batch(B=400, T=128, seed=0):
    """`(B, T)` ids with [CLS] first and a padded tail of 32 tokens (ordinary ids are >= 10)."""
    ids = torch.randint(10, V, (B, T), generator=torch.Generator().manual_seed(seed))
    ids[:, 0] = CLS
    ids[:, -32:] = PAD
    return ids


def test_mlm_statistics_match_bert():
    ids = batch()
    inputs, labels = mask_tokens(
        ids, mask_token_id=MASK, vocab_size=V, special_ids=SPECIAL, generator=torch.Generator().manual_seed(0)
    )
    eligible = ~torch.isin(ids, torch.tensor(SPECIAL))
    selected = labels != IGNORE_INDEX
    n, k = int(eligible.sum()), int(selected.sum())  # n = 400 * 95 = 38 000, k ~ 5 700
    # Binomial rates: std sqrt(q (1 - q) / n). 5 std -> a false failure has probability ~6e-7: selection
    # 5 * sqrt(.15 * .85 / 38000) = 0.009; 80% split 5 * sqrt(.8 * .2 / 5700) = 0.026; 10% splits 0.020.
    assert abs(k / n - 0.15) < 5 * math.sqrt(0.15 * 0.85 / n)
    frac_mask = int((inputs[selected] == MASK).sum()) / k
    frac_same = int((inputs[selected] == ids[selected]).sum()) / k
    assert abs(frac_mask - 0.8) < 5 * math.sqrt(0.8 * 0.2 / k)
    assert abs(frac_same - 0.1) < 5 * math.sqrt(0.1 * 0.9 / k)  # random draws equal to the original: +0.1/V
    assert abs((1 - frac_mask - frac_same) - 0.1) < 5 * math.sqrt(0.1 * 0.9 / k)


def test_mlm_labels_and_special_tokens():
    ids = batch(B=50)
    inputs, labels = mask_tokens(
        ids, mask_token_id=MASK, vocab_size=V, special_ids=SPECIAL, generator=torch.Generator().manual_seed(1)
    )
    selected = labels != IGNORE_INDEX
    special = torch.isin(ids, torch.tensor(SPECIAL))
    assert selected.any() and not (selected & special).any()  # specials and padding never selected
    assert torch.equal(labels[selected], ids[selected])  # labels are the original ids
    assert torch.equal(inputs[~selected], ids[~selected])  # unselected positions untouched
    assert torch.equal(ids, batch(B=50))  # input not modified in place


def test_mlm_special_mask_excludes_positions():
    ids = batch(B=20)
    keep = torch.zeros_like(ids, dtype=torch.bool)
    keep[:, 1:50] = True  # forbid masking these ordinary tokens
    _, labels = mask_tokens(
        ids,
        mask_token_id=MASK,
        vocab_size=V,
        special_ids=SPECIAL,
        special_mask=keep,
        mlm_probability=0.5,
        generator=torch.Generator().manual_seed(0),
    )
    assert (labels[:, 1:50] == IGNORE_INDEX).all() and (labels[:, 50:96] != IGNORE_INDEX).any()


def test_mlm_is_deterministic_with_a_generator():
    ids = batch(B=10)

    def run(seed):
        return mask_tokens(
            ids, mask_token_id=MASK, vocab_size=V, special_ids=SPECIAL, generator=torch.Generator().manual_seed(seed)
        )

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])  # non-vacuity: another seed masks other positions


def test_shift_for_next_token():
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])
    am = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    inputs, labels = shift_for_next_token(ids, am)
    assert torch.equal(inputs, torch.tensor([[5, 6, 7], [9, 10, 0]]))
    assert torch.equal(labels, torch.tensor([[6, 7, 8], [10, -100, -100]]))
    assert torch.equal(shift_for_next_token(ids)[1], ids[:, 1:])  # no mask: padding is a target too
    assert torch.equal(ids[1], torch.tensor([9, 10, 0, 0]))  # input not modified


def test_cross_entropy_ignores_minus_100():
    logits = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([[1, -100, 2], [-100, -100, 4]])
    want = -(logits.log_softmax(-1)[[0, 0, 1], [0, 2, 2], [1, 2, 4]]).mean()  # mean over the 3 labelled positions
    torch.testing.assert_close(cross_entropy_loss(logits, labels), want)


def test_perplexity():
    assert perplexity(0.0) == 1.0  # a certain, correct model
    assert math.isclose(perplexity(math.log(V)), V, rel_tol=1e-12)  # a uniform guess over V tokens
    torch.testing.assert_close(perplexity(torch.tensor(math.log(V))), torch.tensor(float(V)))
    assert perplexity(1e4) == math.inf


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return TinyTransformer(TransformerConfig(vocab_size=20, max_len=16, d_model=32, n_layers=1, n_heads=2, d_ff=64))


@pytest.fixture
def one_thread():
    """Tiny matmuls: thread start-up costs more than the work, and on a busy 2-core runner it costs 10x."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# The batch holds tokens drawn uniformly from 16 ids, so a model that ignores context cannot beat log(16) = 2.77
# nats. Falling below half of that within the step budget shows the model, the loop and the labels work together.
# Measured on seeds 0-1: causal ~0.04 after 30 steps, MLM ~0.75 after 100 steps: each ~2x below the threshold.
OVERFIT_LOSS = math.log(16) / 2


@pytest.mark.parametrize("seed", [0, 1])
def test_overfits_one_batch_causal(one_thread, seed):
    ids = torch.randint(4, 20, (4, 12), generator=torch.Generator().manual_seed(seed))
    history = train(tiny_model(seed), [ids], objective="causal", steps=60, lr=1e-2, progress=False)
    assert len(history) == 60 and history[0] > 2.5  # starts near log(20) = 3.0: the test is not vacuous
    assert history[-1] < OVERFIT_LOSS


@pytest.mark.parametrize("seed", [0, 1])
def test_overfits_one_batch_mlm(one_thread, seed):
    ids = torch.randint(4, 20, (4, 12), generator=torch.Generator().manual_seed(seed))
    ids[:, 0] = 1  # [CLS]
    history = train(
        tiny_model(seed),
        [{"input_ids": ids, "attention_mask": torch.ones_like(ids)}],
        objective="mlm",
        steps=100,
        lr=1e-2,
        mask_token_id=3,
        special_ids=[0, 1, 2, 3],
        mlm_probability=0.3,
        generator=torch.Generator().manual_seed(seed),
        progress=False,
    )
    assert len(history) == 100 and history[0] > 2.5
    assert sum(history[-10:]) / 10 < OVERFIT_LOSS  # MLM losses are noisy (new positions each step): average


def test_evaluate_loss_is_token_weighted_and_matches_cross_entropy(one_thread):
    model = tiny_model()
    a = torch.randint(4, 20, (2, 10), generator=torch.Generator().manual_seed(0))
    b = torch.randint(4, 20, (3, 6), generator=torch.Generator().manual_seed(1))
    train(model, [a], objective="causal", steps=30, lr=1e-2, progress=False)  # memorise a: its loss << b's
    with torch.no_grad():
        la, lb = (cross_entropy_loss(model(x[:, :-1], causal=True), x[:, 1:]) for x in (a, b))
    n_a, n_b = 2 * 9, 3 * 5  # labelled positions: B * (T - 1)
    got = evaluate_loss(model, [a, b], objective="causal")
    assert math.isclose(got, (la.item() * n_a + lb.item() * n_b) / (n_a + n_b), rel_tol=1e-5)
    assert not math.isclose(got, (la.item() + lb.item()) / 2, rel_tol=1e-3)  # non-vacuity: not a mean of means
    assert model.training  # mode restored


def test_evaluate_loss_mlm_is_reproducible_and_ignores_dropout():
    torch.manual_seed(0)
    config = TransformerConfig(vocab_size=20, max_len=16, d_model=32, n_layers=1, n_heads=2, d_ff=64, dropout=0.5)
    model = TinyTransformer(config)
    ids = torch.randint(4, 20, (8, 12), generator=torch.Generator().manual_seed(0))
    batches = [{"input_ids": ids, "attention_mask": torch.ones_like(ids)}]

    def run(seed):
        return evaluate_loss(model, batches, objective="mlm", mask_token_id=3, special_ids=[0, 1, 2, 3],
                             generator=torch.Generator().manual_seed(seed))  # fmt: skip

    assert model.training  # a new module is in train mode: dropout 0.5 would make two calls differ
    assert run(0) == run(0)  # same masks and dropout off inside evaluate_loss: identical
    assert run(0) != run(1)  # non-vacuity: other masks, other loss
    assert model.training  # mode restored


def test_evaluate_loss_rejects_empty_batches():
    with pytest.raises(ValueError, match="no labelled token"):
        evaluate_loss(tiny_model(), [], objective="causal")
    with pytest.raises(ValueError, match="mask_token_id"):
        evaluate_loss(tiny_model(), [], objective="mlm")


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: mask_tokens(batch(2).float(), mask_token_id=3, vocab_size=V), TypeError, "integer tensor"),
        (lambda: mask_tokens(batch(2), mask_token_id=3, vocab_size=V, mlm_probability=0), ValueError, "mlm_probab"),
        (lambda: mask_tokens(batch(2), mask_token_id=V, vocab_size=V), ValueError, "mask_token_id must be in"),
        (
            lambda: mask_tokens(batch(2), mask_token_id=3, vocab_size=V, special_mask=torch.ones(2, 128)),
            TypeError,
            "special_mask must be a bool",
        ),
        (lambda: shift_for_next_token(torch.tensor([[4]])), ValueError, "T >= 2"),
        (lambda: shift_for_next_token(batch(2), torch.ones(2, 5)), ValueError, "attention_mask shape"),
        (lambda: cross_entropy_loss(torch.randn(1, 2, 5), torch.full((1, 2), -100)), ValueError, "every label"),
        (lambda: perplexity(-1.0), ValueError, ">= 0"),
        (lambda: perplexity(float("nan")), ValueError, ">= 0"),
        (lambda: train(tiny_model(), [], objective="mlm", steps=1), ValueError, "mask_token_id"),
        (lambda: train(tiny_model(), [], objective="clm", steps=1), ValueError, "'mlm' or 'causal'"),
        (lambda: train(tiny_model(), [], objective="causal", steps=1, progress=False), ValueError, "empty"),
        (lambda: train(tiny_model(), [batch(1)], objective="causal", steps=0), ValueError, "steps must be >= 1"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
