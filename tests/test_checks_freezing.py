"""Tests for lab_utils.checks.freezing: check_last_layers_params accepts the count of the last k BERT layers + pooler
+ classifier and names the typical miscounts."""

import pytest
from transformers import BertConfig, BertForSequenceClassification

from lab_utils.checks import check_last_layers_params
from lab_utils.freezing import freeze_all_but_last


def layer_params(h, f):
    attention = 4 * (h * h + h) + 2 * h  # Q, K, V, output projection + LayerNorm
    feed_forward = h * f + f + f * h + h + 2 * h  # h -> f -> h + LayerNorm
    return attention + feed_forward


def last_layers_params(k, hidden_size, intermediate_size, num_labels):
    h, n = hidden_size, num_labels
    return k * layer_params(h, intermediate_size) + (h * h + h) + (h * n + n)


def my_last_layers_params(k, hidden_size, intermediate_size, num_labels):
    raise NotImplementedError  # your code here


def test_reference_passes(capsys):
    assert check_last_layers_params(last_layers_params) is True
    assert "✓ trainable counts right for the last k layers" in capsys.readouterr().out


def test_counting_a_real_model_passes():
    def counted(k, h, f, n):
        config = BertConfig(vocab_size=8, hidden_size=h, num_hidden_layers=max(k, 1), num_attention_heads=1,
                            intermediate_size=f, max_position_embeddings=8, num_labels=n)
        model = freeze_all_but_last(BertForSequenceClassification(config), k)
        return sum(p.numel() for p in model.parameters() if p.requires_grad)

    assert check_last_layers_params(counted) is True


def test_stub_says_not_written(capsys):
    assert check_last_layers_params(my_last_layers_params) is False
    assert "✗ my_last_layers_params is not written yet" in capsys.readouterr().out


def head(h, n):
    return h * h + h + h * n + n


@pytest.mark.parametrize(
    ("wrong", "match"),
    [
        (lambda k, h, f, n: k * layer_params(h, f) + h * n + n, "pooler .* is missing"),
        (lambda k, h, f, n: k * layer_params(h, f) + h * h + h, "classifier .* is missing"),
        (lambda k, h, f, n: k * layer_params(h, f), "the head .* trains too, even for k = 0"),
        (lambda k, h, f, n: k * (layer_params(h, f) - 4 * h) + head(h, n), "two LayerNorms"),
        (lambda k, h, f, n: k * (4 * h * h + 2 * h * f + 4 * h) + h * h + h * n, "biases are missing"),
        (lambda k, h, f, n: k * layer_params(h, 4 * h) + head(h, n), r"intermediate_size=24.*assumed f = 4 h"),
        (lambda k, h, f, n: (k + 1) * layer_params(h, f) + head(h, n), "one layer too many"),
        (lambda k, h, f, n: (k - 1) * layer_params(h, f) + head(h, n), "one layer too few"),
        (lambda k, h, f, n: k * (4 * h * h + 6 * h) + head(h, n), "feed-forward"),
        (lambda k, h, f, n: last_layers_params(k, h, f, n) + 1, r"k \* \(4 h\^2"),
        (lambda k, h, f, n: [last_layers_params(k, h, f, n)], "return one number"),
    ],
)
def test_typical_mistakes_are_named(wrong, match):
    with pytest.raises(AssertionError, match=match):
        check_last_layers_params(wrong)
