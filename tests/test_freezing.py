"""Tests for lab_utils.freezing: the last k layers and the head train, everything else is frozen, counts exact."""

import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    LlamaConfig,
    LlamaForSequenceClassification,
)

from lab_utils.freezing import encoder_layers, freeze_all_but_last

N_LAYERS = 3


def tiny_bert(num_labels=2):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=N_LAYERS, num_attention_heads=2,
                        intermediate_size=24, max_position_embeddings=32, num_labels=num_labels)
    return BertForSequenceClassification(config)


def tiny_llama():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=24, num_hidden_layers=N_LAYERS,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32, num_labels=2,
                         pad_token_id=0)
    return LlamaForSequenceClassification(config)


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def trainable(model):
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_encoder_layers_finds_the_stacks():
    bert = tiny_bert()
    assert encoder_layers(bert) is bert.bert.encoder.layer
    assert encoder_layers(bert.bert) is bert.bert.encoder.layer  # a BertModel without a head
    llama = tiny_llama()
    assert encoder_layers(llama) is llama.model.layers
    assert encoder_layers(llama.model) is llama.model.layers
    assert len(encoder_layers(bert)) == len(encoder_layers(llama)) == N_LAYERS


def test_encoder_layers_rejects_other_modules():
    with pytest.raises(TypeError, match="cannot find the transformer layers of Linear"):
        encoder_layers(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="must be an nn.Module"):
        encoder_layers("bert")


def test_k0_trains_the_head_only():
    model = freeze_all_but_last(tiny_bert(), 0)
    assert trainable(model) == {"bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight",
                                "classifier.bias"}


@pytest.mark.parametrize("k", range(N_LAYERS + 1))
def test_counts_are_exact(k):
    model = tiny_bert()
    assert freeze_all_but_last(model, k) is model
    layers = model.bert.encoder.layer
    expected = k * n_params(layers[0]) + n_params(model.bert.pooler) + n_params(model.classifier)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected
    # which layers: the top k, never the embeddings
    for i, layer in enumerate(layers):
        assert all(p.requires_grad == (i >= N_LAYERS - k) for p in layer.parameters())
    assert not any(p.requires_grad for p in model.bert.embeddings.parameters())


def test_k_n_trains_every_layer_but_not_the_embeddings():
    model = freeze_all_but_last(tiny_bert(), N_LAYERS)
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(name.startswith("bert.embeddings.") for name in frozen)


def test_refreezing_with_a_smaller_k_freezes_again():
    model = freeze_all_but_last(tiny_bert(), N_LAYERS)
    freeze_all_but_last(model, 1)
    assert trainable(model) == trainable(freeze_all_but_last(tiny_bert(), 1))


def test_frozen_layers_get_no_gradient():
    model = freeze_all_but_last(tiny_bert(), 1)
    ids = torch.randint(1, 50, (2, 5), generator=torch.Generator().manual_seed(0))
    model(input_ids=ids, labels=torch.tensor([0, 1])).loss.backward()
    layers = model.bert.encoder.layer
    assert all(p.grad is None for p in layers[0].parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.classifier.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in layers[-1].parameters())


def test_llama_with_its_own_head():
    model = tiny_llama()
    freeze_all_but_last(model, 0, head=("norm", "score"))
    assert trainable(model) == {"model.norm.weight", "score.weight"}
    freeze_all_but_last(model, N_LAYERS, head=("norm", "score"))
    expected = N_LAYERS * n_params(model.model.layers[0]) + n_params(model.model.norm) + n_params(model.score)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected
    assert not model.model.embed_tokens.weight.requires_grad


def test_a_single_head_name_as_a_string():
    model = freeze_all_but_last(tiny_bert(), 0, head="classifier")
    assert trainable(model) == {"classifier.weight", "classifier.bias"}


def test_a_bare_bert_model_with_its_pooler():
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=24, max_position_embeddings=32)
    model = freeze_all_but_last(BertModel(config), 1, head=("pooler",))
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == (
        n_params(model.encoder.layer[1]) + n_params(model.pooler))


@pytest.mark.parametrize("k", [-1, N_LAYERS + 1, 1.0, True, "1"])
def test_k_out_of_range_raises(k):
    with pytest.raises(ValueError, match=f"between 0 \\(head only\\) and {N_LAYERS}"):
        freeze_all_but_last(tiny_bert(), k)


def test_unknown_head_raises_and_lists_modules():
    with pytest.raises(ValueError, match="'pooler' matches no module of LlamaForSequenceClassification.*score"):
        freeze_all_but_last(tiny_llama(), 1)  # the BERT default on a Llama
    model = tiny_bert()
    before = trainable(model)
    with pytest.raises(ValueError, match="'head' matches no module"):
        freeze_all_but_last(model, 1, head=("head",))
    assert trainable(model) == before  # nothing was frozen before the error
