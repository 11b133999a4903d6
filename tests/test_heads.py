"""The three BERT task heads of chapter "Fine-tuning and its memory bill" (task_heads) match what the notebook says
they compute: logits by hand from the encoder's hidden states vs the model's, output shapes, and losses equal to a
hand cross-entropy. On a tiny random BertConfig (fast), and once on the real MiniLM.

Tolerance: the hand paths repeat the model's own float32 operations on the same tensors, so they agree to rounding
(ATOL = 1e-6 on logits of order 1)."""

import pytest
import torch
import torch.nn.functional as F
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
)

from lab_utils import assets
from lab_utils.objectives import IGNORE_INDEX, model_loss

ATOL, RTOL = 1e-6, 1e-5
B, T, H, N_LABELS = 3, 7, 16, 5


def tiny(model_class, num_labels=N_LABELS):
    config = BertConfig(vocab_size=50, hidden_size=H, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16, num_labels=num_labels)
    torch.manual_seed(0)
    model = model_class(config).eval()  # eval: dropout off, so the hand path is deterministic
    with torch.no_grad():  # non-zero biases, so a forgotten bias cannot pass
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.bias.normal_(0, 0.5)
    return model


def batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 50, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 5:] = 0  # one padded row
    return {"input_ids": ids, "attention_mask": mask}


# ---------------------------------------------------------------- sequence classification: [CLS] -> pooler -> Linear


def cls_logits_by_hand(model, inputs):
    hidden = model.bert(**inputs).last_hidden_state  # (B, T, H)
    pooled = torch.tanh(model.bert.pooler.dense(hidden[:, 0]))  # (B, H): the [CLS] position only
    return model.classifier(pooled)  # (B, num_labels)


def test_sequence_classification_logits_from_cls_by_hand():
    model, inputs = tiny(BertForSequenceClassification), batch()
    with torch.no_grad():
        out = model(**inputs)
        by_hand = cls_logits_by_hand(model, inputs)
        without_pooler = model.classifier(model.bert(**inputs).last_hidden_state[:, 0])
    assert out.logits.shape == (B, N_LABELS)
    torch.testing.assert_close(by_hand, out.logits, atol=ATOL, rtol=RTOL)
    assert not torch.allclose(without_pooler, out.logits, atol=1e-3)  # non-vacuity: the pooler matters


def test_sequence_classification_reads_only_the_cls_position():
    model, inputs = tiny(BertForSequenceClassification), batch()
    with torch.no_grad():
        hidden = model.bert(**inputs).last_hidden_state
        changed = hidden.clone()
        changed[:, 1:] += 1.0  # every position but [CLS]
        assert torch.equal(model.classifier(model.bert.pooler(hidden)), model.classifier(model.bert.pooler(changed)))


def test_sequence_classification_loss_is_cross_entropy():
    model, inputs = tiny(BertForSequenceClassification), batch()
    labels = torch.tensor([0, 4, 2])
    with torch.no_grad():
        out = model(**inputs, labels=labels)
    assert out.loss.shape == ()
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, labels))
    loss, n = model_loss(model, {**inputs, "labels": labels})
    assert n == B
    torch.testing.assert_close(loss, out.loss)


def test_head_parameter_count_is_one_linear():
    model = tiny(BertForSequenceClassification)
    head = sum(p.numel() for p in model.classifier.parameters())
    assert head == H * N_LABELS + N_LABELS
    assert isinstance(model.classifier, torch.nn.Linear)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in model.bert.parameters()) + head


# ---------------------------------------------------------------- token classification: Linear on every position


def test_token_classification_is_the_classifier_on_every_hidden_state():
    model, inputs = tiny(BertForTokenClassification), batch()
    assert model.bert.pooler is None  # no pooler: the head reads every position
    with torch.no_grad():
        out = model(**inputs)
        hidden = model.bert(**inputs).last_hidden_state  # (B, T, H)
    assert out.logits.shape == (B, T, N_LABELS)
    torch.testing.assert_close(out.logits, hidden @ model.classifier.weight.T + model.classifier.bias,
                               atol=ATOL, rtol=RTOL)


def test_token_classification_loss_ignores_unlabelled_positions():
    model, inputs = tiny(BertForTokenClassification), batch()
    g = torch.Generator().manual_seed(2)
    labels = torch.randint(0, N_LABELS, (B, T), generator=g)
    labels[:, 0] = IGNORE_INDEX  # [CLS]
    labels[1, 5:] = IGNORE_INDEX  # padding
    with torch.no_grad():
        out = model(**inputs, labels=labels)
    scored = labels != IGNORE_INDEX
    by_hand = -out.logits.log_softmax(-1)[scored].gather(-1, labels[scored][:, None]).mean()  # mean over labelled
    torch.testing.assert_close(out.loss, by_hand)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits.flatten(0, 1), labels.flatten()))
    assert model_loss(model, {**inputs, "labels": labels})[1] == int(scored.sum()) == B * T - B - 2
    assert not torch.allclose(out.loss, F.cross_entropy(out.logits.flatten(0, 1), labels.clamp(min=0).flatten()))


# ---------------------------------------------------------------- span extraction: two scores per position


def test_question_answering_start_and_end_are_the_two_columns_of_qa_outputs():
    model, inputs = tiny(BertForQuestionAnswering, num_labels=2), batch()
    assert model.qa_outputs.out_features == 2
    with torch.no_grad():
        out = model(**inputs)
        scores = model.bert(**inputs).last_hidden_state @ model.qa_outputs.weight.T + model.qa_outputs.bias  # (B,T,2)
    assert out.start_logits.shape == out.end_logits.shape == (B, T)
    torch.testing.assert_close(out.start_logits, scores[..., 0], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(out.end_logits, scores[..., 1], atol=ATOL, rtol=RTOL)
    assert not torch.allclose(out.start_logits, out.end_logits)


def test_question_answering_loss_is_the_mean_of_two_cross_entropies():
    model, inputs = tiny(BertForQuestionAnswering, num_labels=2), batch()
    start, end = torch.tensor([1, 2, 3]), torch.tensor([1, 4, 3])
    with torch.no_grad():
        out = model(**inputs, start_positions=start, end_positions=end)
    expected = (F.cross_entropy(out.start_logits, start) + F.cross_entropy(out.end_logits, end)) / 2
    torch.testing.assert_close(out.loss, expected)
    loss, n = model_loss(model, {**inputs, "start_positions": start, "end_positions": end})
    assert n == B
    torch.testing.assert_close(loss, out.loss)


def test_question_answering_ignores_positions_past_the_sequence():
    # transformers clamps positions to [0, T] and ignores T: an answer lost to truncation gives no loss
    model, inputs = tiny(BertForQuestionAnswering, num_labels=2), batch()
    start, end = torch.tensor([1, 99, 3]), torch.tensor([1, 99, 3])
    with torch.no_grad():
        out = model(**inputs, start_positions=start, end_positions=end)
    kept = [0, 2]
    expected = (F.cross_entropy(out.start_logits[kept], start[kept])
                + F.cross_entropy(out.end_logits[kept], end[kept])) / 2
    torch.testing.assert_close(out.loss, expected)


# ---------------------------------------------------------------- the real MiniLM


def test_minilm_sequence_head_pretrained_pooler_new_classifier():
    tok = assets.load_minilm_tokenizer()
    torch.manual_seed(0)
    minilm_cls = assets.load_minilm(AutoModelForSequenceClassification, num_labels=2)
    encoder = assets.load_minilm()
    assert minilm_cls.config.hidden_size == 384
    torch.testing.assert_close(minilm_cls.bert.pooler.dense.weight, encoder.pooler.dense.weight)  # pretrained
    assert sum(p.numel() for p in minilm_cls.classifier.parameters()) == 384 * 2 + 2
    assert sum(p.numel() for p in minilm_cls.parameters() if p.requires_grad) == 22_713_986
    inputs = tok(["@united thanks for nothing #fail", "love it"], padding=True, return_tensors="pt")
    inputs.pop("token_type_ids")
    with torch.no_grad():
        out = minilm_cls(**inputs)
        by_hand = cls_logits_by_hand(minilm_cls, inputs)
        pooled = encoder(**inputs).pooler_output  # the plain encoder's pooler gives the same [CLS] vector
    assert out.logits.shape == (2, 2)
    torch.testing.assert_close(by_hand, out.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(minilm_cls.classifier(pooled), out.logits, atol=1e-5, rtol=1e-5)


def test_auto_classes_pick_the_bert_heads():
    # Guard for the notebook: the auto classes map MiniLM's config type (BertConfig) to the heads tested above.
    from transformers import AutoModelForQuestionAnswering, AutoModelForTokenClassification

    config = tiny(BertForSequenceClassification).config
    assert type(config) is type(assets.load_minilm().config) is BertConfig
    for auto, cls in [(AutoModelForSequenceClassification, BertForSequenceClassification),
                      (AutoModelForTokenClassification, BertForTokenClassification),
                      (AutoModelForQuestionAnswering, BertForQuestionAnswering)]:
        assert type(auto.from_config(config)) is cls


@pytest.mark.parametrize("num_labels", [1, 2, 7])
def test_head_shapes_follow_num_labels(num_labels):
    model = tiny(BertForSequenceClassification, num_labels=num_labels)
    assert model.classifier.weight.shape == (num_labels, H)
    with torch.no_grad():
        assert model(**batch()).logits.shape == (B, num_labels)
