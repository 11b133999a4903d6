"""lab_utils.lora: the hand LoRA against PEFT with the same non-zero weights, its identity at initialisation (and that
the identity tests can fail), merge/unmerge, which parameters train and how many, dropout, and bad inputs.

On a tiny random BertConfig (fast; the same module names as MiniLM). Tolerances: the hand path and PEFT do the same
float32 operations in the same order, so logits agree to rounding (ATOL = 1e-6 on logits of order 1). Merging changes
the order of the operations (x (W + s B A)^T vs x W^T + s (x A^T) B^T), so merged == unmerged holds to MERGE_ATOL =
1e-5 on outputs of order 1, and unmerge restores W to 1e-6 (one float32 add and subtract on weights of order 0.1).
"""

import copy

import peft
import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from lab_utils.lora import LoRALinear, inject_lora, lora_layers, lora_parameter_count, merge_lora, unmerge_lora

ATOL, RTOL = 1e-6, 1e-5
MERGE_ATOL = 1e-5
H, N_LAYERS, INTER = 16, 2, 32
ATTN = ("query", "key", "value", "attention.output.dense")


def tiny_bert(seed=0):
    config = BertConfig(vocab_size=50, hidden_size=H, num_hidden_layers=N_LAYERS, num_attention_heads=2,
                        intermediate_size=INTER, max_position_embeddings=16, num_labels=2)
    torch.manual_seed(seed)
    return BertForSequenceClassification(config).eval()  # eval: dropout off, deterministic


def batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 50, (3, 7), generator=g)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 5:] = 0  # one padded row
    return {"input_ids": ids, "attention_mask": mask}


def perturb_lora(model, seed=2, std=0.3):
    """Non-zero A and B (B is zero at init, so otherwise every comparison would be with the base model)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in lora_layers(model):
            layer.lora_A.weight.copy_(torch.randn(layer.lora_A.weight.shape, generator=g) * std)
            layer.lora_B.weight.copy_(torch.randn(layer.lora_B.weight.shape, generator=g) * std)


def logits(model):
    with torch.no_grad():
        return model(**batch()).logits


# ---------------------------------------------------------------- one layer


def layer_and_input(r=4, alpha=8.0, dropout=0.0):
    torch.manual_seed(0)
    base = nn.Linear(12, 10)
    with torch.no_grad():
        base.bias.normal_(0, 0.5)  # non-zero bias: a forgotten bias cannot pass
    x = torch.randn(3, 5, 12)
    return LoRALinear(base, r=r, lora_alpha=alpha, lora_dropout=dropout), x


def test_shapes_names_and_scaling_follow_peft():
    layer, _ = layer_and_input(r=4, alpha=8.0)
    assert layer.lora_A.weight.shape == (4, 12) and layer.lora_B.weight.shape == (10, 4)
    assert layer.lora_A.bias is None and layer.lora_B.bias is None
    assert (layer.in_features, layer.out_features, layer.r, layer.scaling) == (12, 10, 4, 2.0)
    assert not layer.merged and isinstance(layer.lora_dropout, nn.Identity)
    assert torch.count_nonzero(layer.lora_B.weight) == 0 and torch.count_nonzero(layer.lora_A.weight) > 0
    assert not any(p.requires_grad for p in layer.base_layer.parameters())
    assert layer.lora_A.weight.requires_grad and layer.lora_B.weight.requires_grad


def test_identity_at_init_and_not_after_perturbing_B():
    layer, x = layer_and_input()
    with torch.no_grad():
        torch.testing.assert_close(layer(x), layer.base_layer(x), atol=0, rtol=0)  # B = 0: exactly the base
        layer.lora_B.weight.normal_()
        assert (layer(x) - layer.base_layer(x)).abs().max() > 1e-2  # non-vacuity: the branch is used


def test_forward_is_base_plus_scaled_BAx():
    layer, x = layer_and_input(r=3, alpha=5.0)
    with torch.no_grad():
        layer.lora_B.weight.normal_()
        W, b = layer.base_layer.weight, layer.base_layer.bias
        A, B = layer.lora_A.weight, layer.lora_B.weight
        torch.testing.assert_close(layer(x), x @ W.T + b + (5.0 / 3) * (x @ A.T @ B.T), atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(layer.get_delta_weight(), (5.0 / 3) * B @ A, atol=ATOL, rtol=RTOL)


def test_merge_equals_unmerged_and_unmerge_restores_the_weight():
    layer, x = layer_and_input()
    with torch.no_grad():
        layer.lora_B.weight.normal_()
        w0, before = layer.base_layer.weight.clone(), layer(x)
        layer.merge()
        assert layer.merged
        assert (layer.base_layer.weight - w0).abs().max() > 1e-2  # the update really went into W
        torch.testing.assert_close(layer(x), before, atol=MERGE_ATOL, rtol=RTOL)
        torch.testing.assert_close(layer.base_layer.weight, w0 + layer.get_delta_weight(), atol=ATOL, rtol=RTOL)
        layer.unmerge()
        assert not layer.merged
        torch.testing.assert_close(layer.base_layer.weight, w0, atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(layer(x), before, atol=MERGE_ATOL, rtol=RTOL)


def test_double_merge_and_unmerge_without_merge_raise():
    layer, _ = layer_and_input()
    with pytest.raises(RuntimeError, match="not merged"):
        layer.unmerge()
    layer.merge()
    with pytest.raises(RuntimeError, match="already merged"):
        layer.merge()


def test_dropout_only_in_training_mode_and_only_on_the_lora_branch():
    layer, x = layer_and_input(dropout=0.5)
    assert isinstance(layer.lora_dropout, nn.Dropout) and layer.lora_dropout.p == 0.5
    with torch.no_grad():
        layer.train()
        torch.testing.assert_close(layer(x), layer.base_layer(x), atol=0, rtol=0)  # B = 0: dropout leaves base alone
        layer.lora_B.weight.normal_()
        layer.eval()
        clean = layer(x)
        torch.testing.assert_close(layer(x), clean, atol=0, rtol=0)  # eval: deterministic
        W, b, A, B = layer.base_layer.weight, layer.base_layer.bias, layer.lora_A.weight, layer.lora_B.weight
        torch.testing.assert_close(clean, x @ W.T + b + layer.scaling * (x @ A.T @ B.T), atol=ATOL, rtol=RTOL)
        layer.train()
        torch.manual_seed(3)
        noisy = layer(x)
        assert (noisy - clean).abs().max() > 1e-3  # training: the branch's input is dropped out


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"r": 0}, ValueError, "r .* >= 1"),
    ({"r": -2}, ValueError, "r .* >= 1"),
    ({"r": 2.0}, TypeError, "must be an int"),
    ({"r": True}, TypeError, "must be an int"),
    ({"lora_alpha": 0}, ValueError, "lora_alpha"),
    ({"lora_alpha": -1.0}, ValueError, "lora_alpha"),
    ({"lora_dropout": 1.0}, ValueError, "lora_dropout"),
    ({"lora_dropout": -0.1}, ValueError, "lora_dropout"),
])
def test_bad_layer_arguments_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        LoRALinear(nn.Linear(4, 3), **kwargs)


@pytest.mark.parametrize("base", [nn.Conv1d(4, 3, 1), nn.Embedding(5, 4), nn.LayerNorm(4)])
def test_non_linear_base_raises(base):
    with pytest.raises(TypeError, match="nn.Linear"):
        LoRALinear(base)


def test_wrapping_a_lora_layer_raises():
    with pytest.raises(TypeError, match="already a LoRALinear"):
        LoRALinear(LoRALinear(nn.Linear(4, 3)))


# ---------------------------------------------------------------- a whole model, against PEFT


def copy_lora_into_peft(ours, theirs):
    """Copy our A and B into PEFT's 'default' adapter, layer by layer (the same full names)."""
    inner = theirs.base_model.model
    with torch.no_grad():
        for name, layer in lora_layers(ours):
            target = inner.get_submodule(name)
            target.lora_A["default"].weight.copy_(layer.lora_A.weight)
            target.lora_B["default"].weight.copy_(layer.lora_B.weight)


@pytest.mark.parametrize(("targets", "r", "alpha"), [(["query", "value"], 4, 8.0), (list(ATTN), 2, 3.0)])
def test_hand_lora_equals_peft_with_identical_non_zero_weights(targets, r, alpha):
    base = tiny_bert()
    ours = inject_lora(copy.deepcopy(base), targets, r=r, lora_alpha=alpha)
    perturb_lora(ours)
    config = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets)
    theirs = peft.get_peft_model(copy.deepcopy(base), config).eval()
    peft_names = [n for n, m in theirs.named_modules() if isinstance(m, peft.tuners.lora.Linear)]
    assert sorted(n for n, _ in lora_layers(ours)) == sorted(n.removeprefix("base_model.model.") for n in peft_names)
    copy_lora_into_peft(ours, theirs)
    torch.testing.assert_close(logits(ours), logits(theirs), atol=ATOL, rtol=RTOL)
    assert (logits(ours) - logits(base)).abs().max() > 1e-3  # non-vacuity: the LoRA weights change the logits
    merge_lora(ours)
    theirs = theirs.merge_and_unload()
    torch.testing.assert_close(logits(ours), logits(theirs), atol=MERGE_ATOL, rtol=RTOL)


def test_trainable_parameters_are_lora_and_head_and_match_peft_and_the_formula():
    r = 4
    base = tiny_bert()
    ours = inject_lora(copy.deepcopy(base), list(ATTN), r=r)
    trainable = {n for n, p in ours.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in ours.named_parameters() if ".lora_" in n or n.startswith("classifier.")}
    n_lora = sum(p.numel() for n, p in ours.named_parameters() if p.requires_grad and ".lora_" in n)
    assert n_lora == N_LAYERS * 4 * r * (H + H)  # r * (in + out) per adapted layer, 4 per encoder layer
    assert n_lora == lora_parameter_count({k: (H, H) for k in ATTN}, r, n_layers=N_LAYERS)
    head = sum(p.numel() for p in ours.classifier.parameters())
    config = peft.LoraConfig(task_type=peft.TaskType.SEQ_CLS, r=r, lora_alpha=8, target_modules=list(ATTN))
    theirs = peft.get_peft_model(copy.deepcopy(base), config)  # SEQ_CLS also trains the classifier
    assert n_lora + head == theirs.get_nb_trainable_parameters()[0]
    loss = ours(**batch(), labels=torch.tensor([0, 1, 1])).loss
    loss.backward()  # gradients reach exactly the trainable parameters
    assert {n for n, p in ours.named_parameters() if p.grad is not None} == trainable


def test_targets_follow_peft_matching_rule():
    model = inject_lora(tiny_bert(), ["attention.output.dense"], r=2, trainable=())
    names = [n for n, _ in lora_layers(model)]
    assert names == [f"bert.encoder.layer.{i}.attention.output.dense" for i in range(N_LAYERS)]  # not output.dense
    assert not any(p.requires_grad for n, p in model.named_parameters() if ".lora_" not in n)


def test_merge_lora_model_equals_unmerged_and_restores():
    model = inject_lora(tiny_bert(), ["query", "value"], r=4)
    perturb_lora(model)
    weights = {n: layer.base_layer.weight.clone() for n, layer in lora_layers(model)}
    before = logits(model)
    merge_lora(model)
    assert all(layer.merged for _, layer in lora_layers(model))
    torch.testing.assert_close(logits(model), before, atol=MERGE_ATOL, rtol=RTOL)
    with pytest.raises(RuntimeError, match="already merged"):
        merge_lora(model)
    unmerge_lora(model)
    for n, layer in lora_layers(model):
        torch.testing.assert_close(layer.base_layer.weight, weights[n], atol=ATOL, rtol=RTOL)
    with pytest.raises(RuntimeError, match="not merged"):
        unmerge_lora(model)


def test_bad_injections_raise_clear_errors():
    with pytest.raises(ValueError, match=r"'querry' matches no module.*attention\.self\.query"):
        inject_lora(tiny_bert(), ["querry"])
    with pytest.raises(TypeError, match="LayerNorm.*not an nn.Linear"):
        inject_lora(tiny_bert(), ["LayerNorm"])
    with pytest.raises(TypeError, match="not an nn.Linear"):
        inject_lora(tiny_bert(), ["attention"])
    with pytest.raises(ValueError, match="empty"):
        inject_lora(tiny_bert(), [])
    with pytest.raises(ValueError, match=r"r .* >= 1"):
        inject_lora(tiny_bert(), ["query"], r=0)
    with pytest.raises(ValueError, match="trainable module 'head'"):
        inject_lora(tiny_bert(), ["query"], trainable=("head",))
    with pytest.raises(ValueError, match="both a LoRA target and trainable"):
        inject_lora(tiny_bert(), ["classifier"])
    model = inject_lora(tiny_bert(), ["query"])
    with pytest.raises(ValueError, match="already carries LoRA"):
        inject_lora(model, ["query"])
    with pytest.raises(ValueError, match="no LoRALinear"):
        merge_lora(tiny_bert())


def test_parameter_count_formula_and_bad_inputs():
    minilm_qv = {"query": (384, 384), "value": (384, 384)}
    assert lora_parameter_count(minilm_qv, 8, n_layers=6) == 6 * 2 * 8 * 768 == 73_728
    assert lora_parameter_count({"up": (384, 1536)}, 4) == 4 * (384 + 1536)
    assert lora_parameter_count(minilm_qv, 0, n_layers=6) == 0
    with pytest.raises(ValueError, match=">= 0"):
        lora_parameter_count(minilm_qv, -1)
    with pytest.raises(TypeError, match="int"):
        lora_parameter_count(minilm_qv, 1.5)
    with pytest.raises(ValueError, match="n_layers"):
        lora_parameter_count(minilm_qv, 4, n_layers=0)
    with pytest.raises(ValueError, match="shapes"):
        lora_parameter_count({"query": 384}, 4)


def test_merge_computes_the_update_in_full_precision_whatever_the_session_set(monkeypatch):
    # On a GPU, "high" makes B @ A a TF32 product (~3 digits): the merged model would differ by ~1e-3. The CPU
    # has no TF32, so the test records the precision in force when the update is computed.
    layer = LoRALinear(nn.Linear(16, 8), r=4, lora_alpha=8)
    seen = []
    original = LoRALinear.get_delta_weight
    monkeypatch.setattr(LoRALinear, "get_delta_weight",
                        lambda self: seen.append(torch.get_float32_matmul_precision()) or original(self))
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")  # what the notebooks choose for speed
    try:
        layer.merge()
        layer.unmerge()
        assert torch.get_float32_matmul_precision() == "high"  # the session's choice is restored
    finally:
        torch.set_float32_matmul_precision(previous)
    assert seen == ["highest", "highest"]
