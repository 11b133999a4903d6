"""lab_utils.qlora: the 4-bit base is bitsandbytes' NF4 of MiniLM's own weights (checked against lab_utils.quant),
the head and the trainable set are chapter 3's, a fresh LoRA changes nothing and a perturbed one does, one training
step moves only the trained weights, the footprint counts bytes exactly, and bad inputs fail with a clear message.

MiniLM itself (the packaged checkpoint, CPU). Tolerances: bitsandbytes and lab_utils.quant pick the same 4-bit codes
and absmaxes, so the de-quantized weights agree to float32 rounding of absmax * code (DEQUANT_ATOL = 1e-6 on weights
of order 0.1); a fresh LoRA (B = 0) adds exact zeros, so logits agree exactly up to the order of float32 adds
(FEATURE_ATOL = 1e-6).
"""

import copy
import math

import pytest
import torch
from bitsandbytes.functional import dequantize_4bit
from bitsandbytes.nn import Linear4bit
from torch import nn
from transformers import AutoModelForSequenceClassification

from lab_utils import adaptation, assets, quant
from lab_utils.qlora import (
    LORA_TARGETS,
    base_footprint,
    encoder_bits_per_weight,
    qlora_classifier,
    quant_constant_bytes,
    quantization_config,
    quantized_linear_count,
)

DEQUANT_ATOL = 1e-6
FEATURE_ATOL = 1e-6
N_LAYERS, HIDDEN, INTER = 6, 384, 1536  # MiniLM
QUERY = "base_model.model.bert.encoder.layer.0.attention.self.query"


@pytest.fixture(scope="module")
def nf4():
    return qlora_classifier(base="nf4", double_quant=False, device="cpu", seed=0)


@pytest.fixture(scope="module")
def fp32_minilm():
    return assets.load_minilm(AutoModelForSequenceClassification, num_labels=2)


def batch():
    ids = torch.tensor([[101, 1045, 2293, 2023, 999, 102], [101, 2023, 2003, 6659, 102, 0]])
    return {"input_ids": ids, "attention_mask": (ids != 0).long(), "labels": torch.tensor([1, 0])}


def features(model):
    # the encoder's last hidden states (B, T, 384), of order 1 (the fresh head's logits are of order 0.01)
    model.eval()
    b = batch()
    with torch.no_grad():
        return model.base_model.model.bert(input_ids=b["input_ids"], attention_mask=b["attention_mask"])[0]


def test_every_encoder_linear_is_nf4_of_minilm_weights(nf4, fp32_minilm):
    assert quantized_linear_count(nf4) == N_LAYERS * 6  # q, k, v, attention output, intermediate, output
    layer = dict(nf4.named_modules())[QUERY].base_layer
    assert isinstance(layer, Linear4bit) and layer.weight.quant_state.quant_type == "nf4"
    original = fp32_minilm.bert.encoder.layer[0].attention.self.query.weight.detach()
    ours = quant.dequantize_nf4(*quant.quantize_nf4(original, blocksize=64))
    theirs = dequantize_4bit(layer.weight.data, layer.weight.quant_state).float()
    torch.testing.assert_close(theirs, ours, atol=DEQUANT_ATOL, rtol=0)
    assert not torch.equal(theirs, original)  # it really is quantized


def test_head_and_trainable_set_are_chapter_3s(nf4):
    head = nf4.base_model.model.classifier.modules_to_save["default"]
    pooler = nf4.base_model.model.bert.pooler.modules_to_save["default"].dense
    assert type(head) is nn.Linear and type(pooler) is nn.Linear  # never quantized
    torch.manual_seed(123)  # the head must not depend on the global RNG state
    reference = adaptation.new_classifier(seed=0)
    torch.testing.assert_close(head.weight, reference.classifier.weight, atol=0, rtol=0)
    trainable = {n for n, p in nf4.named_parameters() if p.requires_grad}
    assert all("lora_" in n or "modules_to_save" in n for n in trainable)
    lora = N_LAYERS * len(LORA_TARGETS) * 16 * (HIDDEN + HIDDEN)
    head_params = HIDDEN * HIDDEN + HIDDEN + 2 * HIDDEN + 2
    assert sum(p.numel() for n, p in nf4.named_parameters() if n in trainable) == lora + head_params
    assert all(p.dtype == torch.float32 for n, p in nf4.named_parameters() if n in trainable)


def test_fresh_lora_is_identity_and_perturbed_is_not(nf4):
    model = copy.deepcopy(nf4)
    with model.disable_adapter():
        bare = features(model)
    torch.testing.assert_close(features(model), bare, atol=FEATURE_ATOL, rtol=0)
    with torch.no_grad():
        dict(model.named_modules())[QUERY].lora_B["default"].weight.fill_(0.05)
    assert (features(model) - bare).abs().max() > 1e-2


def test_one_step_moves_only_trained_weights(nf4):
    model = copy.deepcopy(nf4).train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # plain SGD: a zero gradient (lora_A's while B = 0) moves nothing, where AdamW's weight decay would
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(**batch()).loss.backward()
    optimizer.step()
    for name, param in model.named_parameters():
        moved = not torch.equal(param.detach(), before[name])
        trained = param.requires_grad and "lora_A" not in name  # A gets no gradient while B = 0
        assert moved == trained, name


def test_footprint_counts_bytes(nf4, fp32_minilm):
    n_lin = N_LAYERS * (4 * HIDDEN * HIDDEN + 2 * HIDDEN * INTER)
    frozen = sum(p.numel() for p in fp32_minilm.parameters())
    buffers = sum(b.numel() * b.element_size() for b in fp32_minilm.buffers())
    assert base_footprint(fp32_minilm) == 4 * frozen + buffers
    # nf4 without double quantization: n/2 bytes of codes + one fp32 absmax per 64 weights + a 16-entry fp32 code
    # per layer, instead of 4n; the head and everything else are counted twice (PEFT keeps the original head).
    n_quantized = quantized_linear_count(nf4)
    expected_4bit = n_lin // 2 + 4 * n_lin // 64 + n_quantized * 16 * 4
    head_copy = sum(p.numel() for p in (*fp32_minilm.bert.pooler.parameters(), *fp32_minilm.classifier.parameters()))
    biases = N_LAYERS * (4 * HIDDEN + HIDDEN + INTER + HIDDEN) * 4  # encoder biases stay fp32
    rest = 4 * (frozen - n_lin - head_copy) - biases
    assert base_footprint(nf4) == expected_4bit + rest + biases + 4 * head_copy + buffers
    assert encoder_bits_per_weight(nf4) == pytest.approx(8 * expected_4bit / n_lin, rel=1e-12)  # 4.5 + the codes
    assert encoder_bits_per_weight(fp32_minilm) == 32
    assert quant_constant_bytes(nf4) == 4 * n_lin // 64 + n_quantized * 16 * 4  # absmax + code tables only
    assert quant_constant_bytes(fp32_minilm) == 0


def test_int8_row_scales_are_counted():
    from bitsandbytes.nn import Linear8bitLt

    layer = Linear8bitLt(64, 48, bias=False, has_fp16_weights=False)
    layer.weight = type(layer.weight)(torch.randn(48, 64), requires_grad=False, has_fp16_weights=False)
    layer = layer.to("cpu")  # quantizes: int8 codes + one fp32 scale (absmax) per output row
    assert layer.weight.dtype == torch.int8
    assert quant_constant_bytes(layer) == 48 * 4


def test_double_quant_and_16_bit_bases_are_smaller(nf4, fp32_minilm):
    dq = qlora_classifier(base="nf4", double_quant=True, device="cpu")
    assert dq.base_model.model.bert.encoder.layer[0].attention.self.query.base_layer.weight.quant_state.nested
    assert base_footprint(dq) < base_footprint(nf4)  # the fixture has no double quantization
    # double quantization, per layer of n weights: n/2 bytes of codes, n/64 uint8 absmax, one fp32 absmax per 256
    # blocks, the fp32 offset (their mean), and two code tables: NF4's 16 and the 8-bit dynamic map's 256 entries
    layers = [HIDDEN * HIDDEN] * 4 * N_LAYERS + [HIDDEN * INTER] * 2 * N_LAYERS
    dq_bytes = sum(n // 2 + n // 64 + 4 * math.ceil(n / 64 / 256) + 4 + 4 * (16 + 256) for n in layers)
    assert encoder_bits_per_weight(dq) == pytest.approx(8 * dq_bytes / sum(layers), rel=1e-12)
    half = qlora_classifier(base="bf16", device="cpu")
    assert base_footprint(half) < base_footprint(fp32_minilm)
    assert quantized_linear_count(half) == 0
    assert half.base_model.model.bert.encoder.layer[0].output.dense.weight.dtype == torch.bfloat16
    torch.testing.assert_close(half.base_model.model.classifier.modules_to_save["default"].weight,
                               nf4.base_model.model.classifier.modules_to_save["default"].weight, atol=0, rtol=0)
    out = half(**batch())  # a 16-bit base feeds the fp32 head: logits and loss in fp32, gradients flow
    assert out.logits.dtype == torch.float32
    out.loss.backward()
    assert half.base_model.model.classifier.modules_to_save["default"].weight.grad is not None


@pytest.mark.parametrize("kwargs, match", [
    ({"base": "int3"}, "base must be one of"),
    ({"r": 0}, "r \\(the LoRA rank\\)"),
    ({"lora_alpha": 0}, "lora_alpha must be > 0"),
    ({"lora_dropout": 1.0}, "lora_dropout"),
    ({"target_modules": ()}, "target_modules is empty"),
    ({"seed": -1}, "seed must be"),
    ({"base": "fp32", "compute_dtype": torch.bfloat16}, "4-bit bases only"),
])
def test_bad_inputs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        qlora_classifier(device="cpu", **kwargs)


def test_bad_config_and_footprint_inputs():
    with pytest.raises(ValueError, match="quant_type must be"):
        quantization_config(quant_type="int4")
    with pytest.raises(ValueError, match="compute_dtype must be"):
        quantization_config(compute_dtype=torch.int8)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        base_footprint("model")
    with pytest.raises(TypeError, match="torch.nn.Module"):
        quant_constant_bytes(None)
    with pytest.raises(ValueError, match="no linear layer"):
        encoder_bits_per_weight(nn.Sequential(nn.Linear(2, 2)))
