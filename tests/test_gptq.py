"""lab_utils.gptq: GPTQ beats round-to-nearest on correlated inputs, equals it where it must (one column, no
correlation to exploit), tracks the exact objective, lands on the grid, and rejects bad inputs.

Tolerances: LOSS_RTOL = 1e-6: the algorithm's running loss and the directly computed objective agree up to float64
round-off of a Cholesky solve (condition number ~1e3 here); the difference is dominated by w_hat's float32 storage,
hence relative 1e-6 rather than 1e-12.
"""

import pytest
import torch

from lab_utils.gptq import gptq_quantize, layer_output_error, rtn_quantize
from lab_utils.quant import dequantize_zeropoint, quantize_zeropoint

LOSS_RTOL = 1e-6


def correlated(n: int, d: int, seed: int, rank: int = 4) -> torch.Tensor:
    """`(n, d)` activations dominated by a few shared directions (as LLM activations are), plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, rank, generator=g) @ torch.randn(rank, d, generator=g) + 0.1 * torch.randn(n, d, generator=g)


def weights(out: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(out, d, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("bits,blocksize,act_order", [(4, None, False), (3, None, True), (4, 16, False),
                                                      (2, 8, True)])
def test_gptq_beats_rtn_on_correlated_inputs(bits, blocksize, act_order):
    for seed in range(3):
        W, X = weights(16, 64, seed), correlated(256, 64, seed + 100)
        w_hat, _ = gptq_quantize(W, X, bits=bits, blocksize=blocksize, act_order=act_order)
        gptq_err = layer_output_error(W, w_hat, X)
        rtn_err = layer_output_error(W, rtn_quantize(W, bits=bits, blocksize=blocksize), X)
        assert gptq_err < rtn_err, (seed, gptq_err, rtn_err)
    # and not by a hair: on strongly correlated inputs the error compensation pays off several times over
    assert gptq_err < 0.5 * rtn_err, (gptq_err, rtn_err)


def test_one_column_is_rtn():
    W, X = weights(8, 1, 0), correlated(32, 1, 1, rank=1)
    for bits in (2, 4, 8):
        w_hat, info = gptq_quantize(W, X, bits=bits)
        assert torch.equal(w_hat, rtn_quantize(W, bits=bits))
        assert info["loss"] > 0  # non-vacuity: there was something to round


def test_rtn_is_lab_utils_quant_per_row():
    W = weights(8, 24, 3)
    assert torch.equal(rtn_quantize(W, bits=4), dequantize_zeropoint(*quantize_zeropoint(W, 4, axis=0)))


def test_diagonal_hessian_is_rtn():
    # uncorrelated features (X^T X diagonal): H^-1 is diagonal, so a column's error moves nothing else -> RTN
    X = torch.diag(torch.tensor([1.0, 2.0, 3.0, 0.5, 4.0, 1.5])).repeat(3, 1)  # (18, 6), orthogonal columns
    W = weights(5, 6, 4)
    for blocksize, act_order in ((None, False), (None, True), (2, False), (3, True)):
        w_hat, info = gptq_quantize(W, X, bits=3, blocksize=blocksize, act_order=act_order)
        perm = info["perm"] if act_order else torch.arange(6)  # with act_order, groups follow the processing order
        rtn = rtn_quantize(W[:, perm], bits=3, blocksize=blocksize)[:, torch.argsort(perm)]
        assert torch.equal(w_hat, rtn), (blocksize, act_order)
    # non-vacuity: correlate the features (add feature 0 to all others) and GPTQ moves away from RTN
    X[:, 1:] += X[:, :1]
    w_hat, _ = gptq_quantize(W, X, bits=3)
    assert not torch.equal(w_hat, rtn_quantize(W, bits=3))


@pytest.mark.parametrize("damp", [0.0, 0.01, 0.5])
def test_loss_is_the_objective(damp):
    # sum_j (w_j - q_j)^2 / (2 [H_F^-1]_jj) telescopes to 1/2 dW (H + lam I) dW^T = ||dW X^T||^2 + lam/2 ||dW||^2
    W, X = weights(6, 20, 5), correlated(64, 20, 6, rank=20)
    w_hat, info = gptq_quantize(W, X, bits=3, damp=damp, act_order=True, lazy_batch=7)
    dW = W.double() - w_hat.double()
    objective = (dW @ X.double().T).pow(2).sum().item() + info["damp"] / 2 * dW.pow(2).sum().item()
    assert info["loss"] == pytest.approx(objective, rel=LOSS_RTOL)
    assert (info["damp"] == 0) == (damp == 0)


def naive_obs(W: torch.Tensor, X: torch.Tensor, bits: int, damp: float) -> torch.Tensor:
    """The textbook version without Cholesky or batching: invert H restricted to the remaining columns F at every
    step and apply the Optimal Brain Surgeon update delta_F = -(w_j - q_j) / [H_F^-1]_jj [H_F^-1]_{j,F}."""
    W = W.double().clone()
    H = 2 * X.double().T @ X.double()
    H += damp * torch.diag(H).mean() * torch.eye(H.shape[0], dtype=H.dtype)
    _, state = quantize_zeropoint(W.float(), bits, axis=0)  # the per-row grid of the original weights
    s, z = state.scale.double(), state.zero_point.double()
    W_hat = torch.zeros_like(W)
    for j in range(W.shape[1]):
        Hinv = torch.linalg.inv(H[j:, j:])  # [H_F^-1], F = columns j..in-1
        W_hat[:, j] = ((torch.round(W[:, j] * s) + z).clamp(0, 2 ** bits - 1) - z) / s
        W[:, j:] -= ((W[:, j] - W_hat[:, j]) / Hinv[0, 0])[:, None] * Hinv[0][None, :]
    return W_hat


@pytest.mark.parametrize("bits", [2, 4])
def test_matches_naive_optimal_brain_surgeon(bits):
    W, X = weights(6, 16, 17).double(), correlated(64, 16, 18).double()
    w_hat, _ = gptq_quantize(W, X, bits=bits, lazy_batch=5)
    torch.testing.assert_close(w_hat, naive_obs(W, X, bits, damp=0.01))


def test_act_order_goes_by_decreasing_activation_energy():
    W, X = weights(6, 16, 19).double(), correlated(64, 16, 20).double()
    X = X * torch.linspace(0.2, 3.0, 16, dtype=X.dtype)  # distinct energies, not already sorted either way
    X = X[:, torch.randperm(16, generator=torch.Generator().manual_seed(0))]
    w_hat, info = gptq_quantize(W, X, bits=3, act_order=True)
    perm = info["perm"]
    assert torch.equal(perm, torch.argsort(X.pow(2).sum(0), descending=True))  # diag H = 2 sum_n x_nj^2
    inv = torch.argsort(perm)
    torch.testing.assert_close(w_hat, naive_obs(W[:, perm], X[:, perm], 3, damp=0.01)[:, inv])


def test_lazy_batching_does_not_change_the_result():
    W, X = weights(8, 40, 7).double(), correlated(128, 40, 8).double()
    for blocksize in (None, 8, 12):  # 12: groups straddle the lazy batches
        ref, ref_info = gptq_quantize(W, X, bits=3, blocksize=blocksize, lazy_batch=1)
        for b in (5, 16, 128):
            w_hat, info = gptq_quantize(W, X, bits=3, blocksize=blocksize, lazy_batch=b)
            assert torch.equal(info["q"], ref_info["q"]), (blocksize, b)
            torch.testing.assert_close(w_hat, ref)


@pytest.mark.parametrize("bits,blocksize,act_order", [(4, None, False), (3, 8, False), (4, 8, True), (2, 5, True)])
def test_values_lie_on_the_grid(bits, blocksize, act_order):
    W, X = weights(10, 24, 9), correlated(96, 24, 10)
    w_hat, info = gptq_quantize(W, X, bits=bits, blocksize=blocksize, act_order=act_order)
    q, s, z, g = info["q"], info["scale"], info["zero_point"], info["g_idx"]
    group = blocksize or 24
    assert w_hat.shape == W.shape and w_hat.dtype == W.dtype and q.dtype == torch.uint8
    assert s.shape == z.shape == (10, -(-24 // group)) and g.shape == (24,)
    assert int(q.max()) <= 2 ** bits - 1
    assert torch.bincount(g).tolist() == [min(group, 24 - k * group) for k in range(s.shape[1])]  # group sizes
    # every value is (integer code - z) / s of its row's group
    torch.testing.assert_close(w_hat, (q.float() - z[:, g]) / s[:, g], rtol=0, atol=0)
    for r in range(10):
        for k in range(s.shape[1]):
            grid = (torch.arange(2 ** bits) - z[r, k]) / s[r, k]
            vals = w_hat[r, g == k]
            assert torch.isin(vals, grid).all(), (r, k)
    if act_order:
        assert sorted(info["perm"].tolist()) == list(range(24))
    else:
        assert info["perm"] is None


def test_dtypes_and_dead_inputs():
    W, X = weights(4, 12, 11), correlated(48, 12, 12)
    w16, _ = gptq_quantize(W.to(torch.bfloat16), X, bits=4)
    assert w16.dtype == torch.bfloat16 and w16.shape == (4, 12)
    X[:, 3] = 0  # a feature that is never active: its weights do not matter and become 0
    w_hat, info = gptq_quantize(W, X, bits=4)
    assert torch.isfinite(w_hat).all()
    assert w_hat[:, 3].abs().max() < info["scale"].reciprocal().max()  # 0 rounded onto the grid: within one step


def test_layer_output_error():
    W, X = weights(4, 8, 13), correlated(16, 8, 14)
    assert layer_output_error(W, W, X) == 0.0
    assert layer_output_error(W, torch.zeros_like(W), X) == pytest.approx(1.0)
    assert layer_output_error(W, 1.1 * W, X) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="shape"):
        layer_output_error(W, W[:, :4], X)
    with pytest.raises(ValueError, match="undefined"):
        layer_output_error(W, W, torch.zeros_like(X))


def test_bad_inputs_raise():
    W, X = weights(4, 8, 15), correlated(16, 8, 16)
    for bits in (1, 9, 16):
        with pytest.raises(ValueError, match="bits must be in 2..8"):
            gptq_quantize(W, X, bits=bits)
        with pytest.raises(ValueError, match="bits must be in 2..8"):
            rtn_quantize(W, bits=bits)
    with pytest.raises(TypeError, match="bits must be an int"):
        gptq_quantize(W, X, bits=4.0)
    with pytest.raises(ValueError, match="blocksize must be >= 1"):
        gptq_quantize(W, X, blocksize=0)
    with pytest.raises(ValueError, match="8 input columns"):
        gptq_quantize(W, X[:, :6])
    with pytest.raises(TypeError, match="reshape"):
        gptq_quantize(W, X[None])
    with pytest.raises(TypeError, match="2-D floating-point"):
        gptq_quantize(W.long(), X)
    with pytest.raises(ValueError, match="damp"):
        gptq_quantize(W, X, damp=-0.1)
    with pytest.raises(ValueError, match="finite"):
        gptq_quantize(W, X * float("nan"))
    with pytest.raises(TypeError, match="act_order"):
        gptq_quantize(W, X, act_order="yes")
    # rank-deficient H without damping: a clear message, not a LinAlgError
    with pytest.raises(ValueError, match="raise damp"):
        gptq_quantize(W, X[:3], damp=0.0)


def test_outputs_follow_the_weight_device_and_inputs_must_match():
    W, X = weights(8, 32, 7), correlated(64, 32, 8)
    w_hat, info = gptq_quantize(W, X, bits=4, blocksize=8, act_order=True)
    for t in [w_hat] + [v for v in info.values() if isinstance(v, torch.Tensor)]:
        assert t.device == W.device
    assert isinstance(info["loss"], float)
    with pytest.raises(ValueError, match="same device"):
        gptq_quantize(W, X.to("meta"), bits=4)
    with pytest.raises(ValueError, match="same device"):
        layer_output_error(W, w_hat, X.to("meta"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    W, X = weights(16, 64, 3), correlated(128, 64, 4)
    w_cpu, info_cpu = gptq_quantize(W, X, bits=4, blocksize=16, act_order=True)
    w_gpu, info_gpu = gptq_quantize(W.cuda(), X.cuda(), bits=4, blocksize=16, act_order=True)
    assert w_gpu.is_cuda and info_gpu["q"].is_cuda
    assert torch.allclose(w_gpu.cpu(), w_cpu, atol=1e-5)
    assert info_gpu["loss"] == pytest.approx(info_cpu["loss"], rel=1e-6)
