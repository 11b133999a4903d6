"""lab_utils.weight_quant: in-place simulated quantization of every nn.Linear weight.

Equivalence: each weight equals lab_utils.quant's round trip, and per-row int8 absmax equals bitsandbytes'
int8_vectorwise_quant/dequant on CPU. Properties: the rounding error is within half a grid step (derived below),
re-quantizing is a fixed point, fewer bits give a larger error, skipped layers / biases / other modules are bit for
bit unchanged, tied weights are quantized once, dtype and requires_grad survive. Bad inputs raise with a message.

Tolerances: HALF_STEP_SLACK = 1e-6 (relative to the absmax) covers the float32 rounding of w * s before round();
BNB_ATOL = 1e-6: bitsandbytes multiplies by absmax / 127 where quant divides by 127 first (float32 rounding only).
"""

import bitsandbytes.functional as bnbf
import pytest
import torch
from torch import nn

from lab_utils.quant import dequantize_absmax, dequantize_zeropoint, quantize_absmax, quantize_zeropoint
from lab_utils.weight_quant import quantize_linear_weights

HALF_STEP_SLACK = 1e-6
BNB_ATOL = 1e-6


class Toy(nn.Module):
    """An encoder-like toy: embedding, two linear layers around a LayerNorm, a head, a tied output layer."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(11, 8)
        self.encoder = nn.ModuleDict({"up": nn.Linear(8, 24), "norm": nn.LayerNorm(24), "down": nn.Linear(24, 8)})
        self.classifier = nn.Linear(8, 2)
        self.lm_head = nn.Linear(8, 11, bias=False)
        self.lm_head.weight = self.embed.weight  # tied, as in SmolLM2
        with torch.no_grad():
            self.encoder["up"].weight[3, 5] = 9.0  # one outlier: per-tensor scales suffer, per-row less

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids)
        h = self.encoder["down"](self.encoder["norm"](self.encoder["up"](h)))
        return self.classifier(h)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("scheme, quant, dequant", [("absmax", quantize_absmax, dequantize_absmax),
                                                    ("zeropoint", quantize_zeropoint, dequantize_zeropoint)])
@pytest.mark.parametrize("layout", [{}, {"axis": 0}, {"axis": 1}, {"blocksize": 16}])
def test_each_weight_is_the_quant_round_trip(scheme, quant, dequant, layout):
    model, before = Toy(), _snapshot(Toy())
    info = quantize_linear_weights(model, bits=4, scheme=scheme, **layout)
    for name in ("encoder.up", "encoder.down", "classifier", "lm_head"):
        key = f"{name}.weight"
        q, state = quant(before[key], 4, **layout)
        torch.testing.assert_close(model.state_dict()[key], dequant(q, state), rtol=0, atol=0)
    assert info["layers"] == 4 and info["skipped"] == []
    assert info["weights"] == 8 * 24 + 24 * 8 + 8 * 2 + 11 * 8


def test_per_row_int8_matches_bitsandbytes():
    model, before = Toy(), _snapshot(Toy())
    quantize_linear_weights(model, bits=8, axis=0)
    for key in ("encoder.up.weight", "encoder.down.weight", "classifier.weight"):
        codes, row_absmax, _ = bnbf.int8_vectorwise_quant(before[key])
        want = bnbf.int8_vectorwise_dequant(codes, row_absmax)
        torch.testing.assert_close(model.state_dict()[key], want, rtol=0, atol=BNB_ATOL)


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("layout", [{}, {"axis": 0}, {"blocksize": 8}])
def test_error_within_half_a_step(bits, layout):
    # absmax: s = qmax / a, w_hat = round(w s) / s, so |w - w_hat| <= 1 / (2 s) = a / (2 qmax), a = the group's
    # absmax; every group's a is <= the matrix's, and the per-row bound is checked exactly for axis=0.
    model, before = Toy(), _snapshot(Toy())
    quantize_linear_weights(model, bits=bits, **layout)
    qmax = 2 ** (bits - 1) - 1
    for key in ("encoder.up.weight", "encoder.down.weight"):
        w, w_hat = before[key], model.state_dict()[key]
        a = w.abs().amax(dim=1, keepdim=True) if layout.get("axis") == 0 else w.abs().max()
        assert ((w - w_hat).abs() <= a / (2 * qmax) + HALF_STEP_SLACK * a).all()


@pytest.mark.parametrize("scheme", ["absmax", "zeropoint"])
def test_requantizing_is_a_fixed_point_and_fewer_bits_cost_more(scheme):
    model = Toy()
    quantize_linear_weights(model, bits=4, scheme=scheme, axis=0)
    once = _snapshot(model)
    again = quantize_linear_weights(model, bits=4, scheme=scheme, axis=0)
    for k, v in once.items():
        torch.testing.assert_close(model.state_dict()[k], v, rtol=0, atol=1e-6)
    assert again["max_rel_rmse"] < 1e-5  # weights already on the grid
    errs = [quantize_linear_weights(Toy(), bits=b, scheme=scheme)["rel_rmse"] for b in (8, 4, 2)]
    assert 0 < errs[0] < errs[1] < errs[2], errs  # non-vacuous: the weights did change


def test_per_row_beats_per_tensor_with_an_outlier():
    per_tensor = quantize_linear_weights(Toy(), bits=4)["errors"]["encoder.up"]
    per_row = quantize_linear_weights(Toy(), bits=4, axis=0)["errors"]["encoder.up"]
    assert per_row < 0.7 * per_tensor, (per_row, per_tensor)


def test_skip_biases_and_other_modules_untouched():
    model, before = Toy(), _snapshot(Toy())
    info = quantize_linear_weights(model, bits=2, skip=("classifier", "lm_head"))
    after = model.state_dict()
    for key in ("classifier.weight", "classifier.bias", "embed.weight", "lm_head.weight", "encoder.up.bias",
                "encoder.norm.weight", "encoder.norm.bias", "encoder.down.bias"):
        assert torch.equal(after[key], before[key]), key
    assert not torch.equal(after["encoder.up.weight"], before["encoder.up.weight"])
    assert info["skipped"] == ["classifier", "lm_head"] and info["layers"] == 2
    assert quantize_linear_weights(Toy(), bits=8, skip="classifier")["skipped"] == ["classifier"]  # a str: one key


def test_tied_weight_quantized_once_and_shared():
    model = Toy()
    info = quantize_linear_weights(model, bits=4, skip=("encoder", "classifier"))
    assert info["layers"] == 1 and model.lm_head.weight is model.embed.weight
    q, state = quantize_absmax(Toy().embed.weight.detach(), 4)
    torch.testing.assert_close(model.embed.weight.detach(), dequantize_absmax(q, state), rtol=0, atol=0)


def test_dtype_device_and_requires_grad_kept():
    model = Toy().to(torch.bfloat16)
    model.encoder["down"].weight.requires_grad_(False)
    quantize_linear_weights(model, bits=8, blocksize=16)
    assert model.encoder["up"].weight.dtype == torch.bfloat16
    assert model.encoder["up"].weight.requires_grad and not model.encoder["down"].weight.requires_grad
    assert isinstance(model.encoder["up"].weight, nn.Parameter)
    assert model(torch.tensor([[1, 2, 3]])).shape == (1, 3, 2)


def test_bad_inputs():
    with pytest.raises(TypeError, match="nn.Module"):
        quantize_linear_weights(torch.zeros(3), bits=8)
    with pytest.raises(ValueError, match="scheme must be one of"):
        quantize_linear_weights(Toy(), bits=4, scheme="nf4")
    with pytest.raises(ValueError, match="bits must be in 2..16"):
        quantize_linear_weights(Toy(), bits=1)
    with pytest.raises(ValueError, match="not both"):
        quantize_linear_weights(Toy(), bits=8, axis=0, blocksize=8)
    with pytest.raises(ValueError, match="match no linear layer"):
        quantize_linear_weights(Toy(), bits=8, skip=("clasifier",))
    with pytest.raises(ValueError, match="no linear layer to quantize"):
        quantize_linear_weights(Toy(), bits=8, skip=("e",))  # every name holds an "e"
    with pytest.raises(ValueError, match="no nn.Linear"):
        quantize_linear_weights(nn.LayerNorm(4), bits=8)
    with pytest.raises(TypeError, match="non-empty strings"):
        quantize_linear_weights(Toy(), bits=8, skip=("classifier", 3))
    int_model = Toy()
    int_model.classifier.weight = nn.Parameter(torch.zeros(2, 8, dtype=torch.int8), requires_grad=False)
    with pytest.raises(TypeError, match="already quantized"):
        quantize_linear_weights(int_model, bits=8)
