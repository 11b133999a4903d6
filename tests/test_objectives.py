"""Tests for lab_utils.objectives: BERT masking (vs transformers' collator), next-token loss (vs transformers'
own `labels=` loss), MLM loss and accuracy, perplexity. Training with these losses is tested in test_training.py."""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import DataCollatorForLanguageModeling

from lab_utils import assets
from lab_utils.models import TinyTransformer, TransformerConfig
from lab_utils.objectives import (
    IGNORE_INDEX,
    cross_entropy_loss,
    mask_tokens,
    masked_token_accuracy,
    mlm_loss,
    model_loss,
    next_token_loss,
    perplexity,
    shift_for_next_token,
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


def mask_rates(ids, inputs, labels, mask_id):
    """(selection rate among ordinary tokens, [MASK] / unchanged / random fractions of the selected) and counts."""
    selected = labels != IGNORE_INDEX
    k = int(selected.sum())
    frac_mask = int((inputs[selected] == mask_id).sum()) / k
    frac_same = int((inputs[selected] == ids[selected]).sum()) / k
    return k, (frac_mask, frac_same, 1 - frac_mask - frac_same)


def test_mlm_statistics_match_transformers_collator():
    # The same batch of MiniLM ids masked by mask_tokens and by DataCollatorForLanguageModeling (BERT's recipe).
    tok = assets.load_minilm_tokenizer()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, len(tok), (300, 64), generator=g)
    ids[:, 0], ids[:, 40], ids[:, 41:] = tok.cls_token_id, tok.sep_token_id, tok.pad_token_id
    ours_in, ours_labels = mask_tokens(ids, mask_token_id=tok.mask_token_id, vocab_size=len(tok),
                                       special_ids=tok.all_special_ids, generator=g)
    hf = DataCollatorForLanguageModeling(tok, mlm_probability=0.15, seed=0)([{"input_ids": row} for row in ids])
    special = torch.isin(ids, torch.tensor(tok.all_special_ids))
    n = int((~special).sum())  # 300 * 39 = 11 700 ordinary tokens
    for labels in (ours_labels, hf["labels"]):
        assert not ((labels != IGNORE_INDEX) & special).any()  # [CLS], [SEP], [PAD] never selected
    k_ours, ours = mask_rates(ids, ours_in, ours_labels, tok.mask_token_id)
    k_hf, theirs = mask_rates(ids, hf["input_ids"], hf["labels"], tok.mask_token_id)
    # Two independent binomial rates with the same q differ by std sqrt(q(1-q)(1/n1 + 1/n2)); 5 std -> a false
    # failure has probability ~6e-7. Selection: 5 * sqrt(.15 * .85 * 2 / 11700) = 0.023; with k ~ 1750 selected
    # tokens each, the 80% split 5 * sqrt(.16 * 2 / 1750) = 0.068 and the 10% splits 0.051.
    assert abs(k_ours / n - k_hf / n) < 5 * math.sqrt(0.15 * 0.85 * 2 / n)
    for q, a, b in zip((0.8, 0.1, 0.1), ours, theirs, strict=True):
        assert abs(a - b) < 5 * math.sqrt(q * (1 - q) * (1 / k_ours + 1 / k_hf)), (ours, theirs)


def test_next_token_loss_equals_transformers_labels_loss(tiny_llama):
    # Hugging Face shifts inside the model (labels = input_ids, -100 = no target); we shift before the loss.
    ids = torch.randint(3, 64, (3, 9), generator=torch.Generator().manual_seed(0))
    att = torch.ones_like(ids)
    att[1, 6:], att[2, 4:] = 0, 0  # right padding
    ids = ids.masked_fill(att == 0, 0)
    with torch.no_grad():
        want = tiny_llama(input_ids=ids, attention_mask=att, labels=ids.masked_fill(att == 0, -100)).loss
        inputs, labels = shift_for_next_token(ids, att)
        ours = cross_entropy_loss(tiny_llama(input_ids=inputs, attention_mask=att[:, :-1]).logits, labels)
        loss, n = next_token_loss(tiny_llama, {"input_ids": ids, "attention_mask": att})
    torch.testing.assert_close(ours, want)
    torch.testing.assert_close(loss, want)
    assert n == 8 + 5 + 3  # targets: T - 1 per row, minus the padded ones
    without_mask = tiny_llama(input_ids=ids, labels=ids).loss.detach()  # non-vacuity: padding as targets differs
    assert not torch.allclose(without_mask, want)


def tiny_model(seed=0, **kwargs):
    torch.manual_seed(seed)
    config = TransformerConfig(vocab_size=20, max_len=16, d_model=32, n_layers=2, n_heads=2, d_ff=64, **kwargs)
    return TinyTransformer(config).eval()


def test_next_token_loss_equals_scoring_each_prefix_alone():
    # Position t predicts token t + 1 from tokens <= t: a forward on the prefix ids[:, :t + 1] alone cannot see the
    # future, so its last logits are the reference. Catches a next_token_loss that forgets the causal mask.
    model = tiny_model()
    ids = torch.randint(4, 20, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        per_t = [torch.nn.functional.cross_entropy(model(ids[:, : t + 1], causal=True)[:, -1], ids[:, t + 1])
                 for t in range(7)]
        loss, n = next_token_loss(model, ids)
    torch.testing.assert_close(loss, torch.stack(per_t).mean(), rtol=1e-5, atol=1e-6)
    assert n == 2 * 7


def test_mlm_loss_selects_only_real_tokens_and_is_reproducible():
    model = tiny_model()
    ids = torch.randint(4, 20, (4, 12), generator=torch.Generator().manual_seed(0))
    att = torch.ones_like(ids)
    att[:, 8:] = 0  # padding: 32 real tokens of 48, never selected
    batch = {"input_ids": ids, "attention_mask": att}

    def run(seed, p=0.15):
        with torch.no_grad():
            return mlm_loss(mask_token_id=3, special_ids=[0, 1, 2, 3], mlm_probability=p,
                            generator=torch.Generator().manual_seed(seed))(model, batch)

    assert run(0) == run(0) and run(0)[0] != run(1)[0]  # same seed, same masks; another seed, other masks
    assert run(0, p=1.0)[1] == 32  # every real token selected, no padded one


class Oracle(torch.nn.Module):
    """An MLM that knows the answers: at every position the true id gets rank `rank` (0 = top) among the logits."""

    def __init__(self, answers, rank, V=20):
        super().__init__()
        self.config = TransformerConfig(vocab_size=V, max_len=16)
        self.answers, self.rank, self.w = answers, rank, torch.nn.Parameter(torch.zeros(1))
        self.calls = []

    def forward(self, input_ids, attention_mask=None, causal=False):
        self.calls.append((causal, self.training))
        V = self.config.vocab_size
        logits = -torch.arange(V, dtype=torch.float).expand(*input_ids.shape, V).clone()  # token order 0, 1, ...
        for r in range(self.rank + 1):  # the answer at rank `rank`, preceded by other tokens
            ids = self.answers if r == self.rank else (self.answers + r + 1) % V
            logits.scatter_(-1, ids[..., None], 100.0 - r)
        return logits


def test_masked_token_accuracy_counts_the_rank_of_the_answer():
    ids = torch.randint(4, 20, (8, 12), generator=torch.Generator().manual_seed(0))
    for rank, want in [(0, {1: 1.0, 5: 1.0}), (2, {1: 0.0, 5: 1.0}), (6, {1: 0.0, 5: 0.0})]:
        oracle = Oracle(ids, rank)
        got = masked_token_accuracy(oracle, [ids], mask_token_id=3, special_ids=[0, 1, 2, 3])
        assert got == want, (rank, got)
        assert all(c == (False, False) for c in oracle.calls) and oracle.training  # bidirectional, eval, restored


def test_masked_token_accuracy_is_reproducible():
    model = tiny_model()
    ids = torch.randint(4, 20, (8, 12), generator=torch.Generator().manual_seed(0))
    a = masked_token_accuracy(model, [ids], mask_token_id=3, special_ids=[0, 1, 2, 3])
    assert a == masked_token_accuracy(model, [ids], mask_token_id=3, special_ids=[0, 1, 2, 3])  # fixed-seed masks
    assert 0 <= a[1] <= a[5] <= 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU batch")
def test_cpu_generator_masks_cuda_ids_as_cpu_ids():
    ids = batch(B=8)
    kwargs = dict(mask_token_id=MASK, vocab_size=V, special_ids=SPECIAL)
    cpu = mask_tokens(ids, generator=torch.Generator().manual_seed(0), **kwargs)
    gpu = mask_tokens(ids.cuda(), generator=torch.Generator().manual_seed(0), **kwargs)
    assert gpu[0].is_cuda and all(torch.equal(a, b.cpu()) for a, b in zip(cpu, gpu, strict=True))

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
        (lambda: mlm_loss(mask_token_id=3, mlm_probability=1.5), ValueError, "mlm_probability"),
        (lambda: mlm_loss(mask_token_id=3, special_ids=[0])(tiny_model(), torch.zeros(2, 5, dtype=torch.long)),
         ValueError,
         "no token of a batch could be masked"),
        (lambda: next_token_loss(tiny_model(), {"ids": batch(1)}), ValueError, "'input_ids' entry"),
        (lambda: masked_token_accuracy(tiny_model(), [], mask_token_id=3), ValueError, "no token to mask"),
        (lambda: masked_token_accuracy(tiny_model(), [], mask_token_id=3, k=(0,)), ValueError, "k must be"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---------------------------------------------------------------- model_loss: a transformers head's own loss
def _tiny_bert(head, num_labels=3):
    from transformers import BertConfig

    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16, num_labels=num_labels)
    torch.manual_seed(0)
    return head(config).eval()


def test_model_loss_is_the_heads_loss_and_counts_labelled_tokens():
    from transformers import BertForTokenClassification

    model = _tiny_bert(BertForTokenClassification)
    ids = torch.randint(0, 50, (2, 5))
    labels = torch.tensor([[0, 1, 2, -100, -100], [1, -100, 0, 2, 1]])
    loss, n = model_loss(model, {"input_ids": ids, "labels": labels})
    logits = model(input_ids=ids).logits
    torch.testing.assert_close(loss, F.cross_entropy(logits.view(-1, 3), labels.view(-1), ignore_index=-100))
    assert n == 7


def test_model_loss_counts_examples_for_spans_and_rejects_batches_without_targets():
    from transformers import BertForQuestionAnswering

    model = _tiny_bert(BertForQuestionAnswering, num_labels=2)  # start and end logits
    ids = torch.randint(0, 50, (3, 6))
    batch = {"input_ids": ids, "start_positions": torch.tensor([1, 2, 0]), "end_positions": torch.tensor([2, 4, 0])}
    loss, n = model_loss(model, batch)
    assert n == 3 and loss.ndim == 0 and loss > 0
    with pytest.raises(ValueError, match="no targets"):
        model_loss(model, {"input_ids": ids})
    with pytest.raises(ValueError, match="dict batch"):
        model_loss(model, ids)
