"""GPTQ (Frantar et al. 2023, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained Transformers")
for one Linear layer: a small reference implementation of the paper's Algorithm 1, next to round-to-nearest (RTN).

Weights are `(out, in)` as in `torch.nn.Linear`; calibration inputs `(N, in)`. The grid is asymmetric zero-point per
output row, or per group of `blocksize` consecutive input columns of a row (`lab_utils.quant.quantize_zeropoint`).
Chapter "Quantization". Needs only torch and `lab_utils.quant`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lab_utils.quant import _check_int, quantize_zeropoint

__all__ = ["gptq_quantize", "layer_output_error", "rtn_quantize"]


def _check_weight(weight: object) -> Tensor:
    if not isinstance(weight, Tensor) or not weight.is_floating_point() or weight.dim() != 2:
        raise TypeError(f"weight must be a 2-D floating-point tensor (out, in), like nn.Linear.weight; got "
                        f"{type(weight).__name__} {getattr(weight, 'dtype', '')} {tuple(getattr(weight, 'shape', ()))}")
    if weight.numel() == 0 or not torch.isfinite(weight).all():
        raise ValueError("weight must be non-empty and finite (no inf/nan)")
    return weight


def _check_inputs(inputs: object, n_in: int, device: torch.device) -> Tensor:
    if not isinstance(inputs, Tensor) or not inputs.is_floating_point() or inputs.dim() != 2:
        raise TypeError(f"inputs must be a 2-D floating-point tensor (N, in) of calibration activations; got "
                        f"{type(inputs).__name__} {tuple(getattr(inputs, 'shape', ()))}: flatten (batch, seq, in) "
                        "with inputs.reshape(-1, in)")
    if inputs.shape[1] != n_in:
        raise ValueError(f"inputs have {inputs.shape[1]} features but the weight has {n_in} input columns")
    if inputs.device != device:
        raise ValueError(f"inputs are on {inputs.device} but the weight is on {device}: move them to the same device "
                         "(inputs.to(weight.device))")
    if inputs.shape[0] == 0 or not torch.isfinite(inputs).all():
        raise ValueError("inputs must hold at least one finite row (no inf/nan)")
    return inputs


def _grid(w: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """Per-row zero-point grid of `w` `(out, g)`: scale s and zero point z, both `(out,)` float32 (lab_utils.quant)."""
    _, state = quantize_zeropoint(w.float(), bits, axis=0)
    return state.scale, state.zero_point.float()


def _round(w: Tensor, s: Tensor, z: Tensor, bits: int) -> Tensor:
    """Codes of `w` `(out,)` or `(out, g)` on the grid (s, z) `(out,)`: q = clamp(round(w s) + z, 0, 2^b - 1)."""
    s, z = (s, z) if w.dim() == 1 else (s[:, None], z[:, None])
    return (torch.round(w * s.to(w.dtype)) + z.to(w.dtype)).clamp(0, 2 ** bits - 1)  # same formula as quant.py


def _dequantize(q: Tensor, scale: Tensor, zero_point: Tensor, g_idx: Tensor) -> Tensor:
    """w_hat = (q - z) / s `(out, in)` float32, with each column's group's (s, z) `(out, n_groups)`."""
    return (q.float() - zero_point[:, g_idx].float()) / scale[:, g_idx]


def _check_common(weight: Tensor, bits: int, blocksize: int | None) -> int:
    _check_int("bits", bits, 2, 8)  # GPTQ's regime: 2..8 bits (codes fit in uint8)
    if blocksize is not None:
        _check_int("blocksize", blocksize, 1)
    return weight.shape[1] if blocksize is None else blocksize


def rtn_quantize(weight: Tensor, *, bits: int = 4, blocksize: int | None = None) -> Tensor:
    """Round-to-nearest on the grid GPTQ uses: each row (or group of `blocksize` columns) on its own zero-point grid.

    Args:
        weight: `(out, in)` floating point.
        bits: 2..8.
        blocksize: group size along `in` (the last group may be shorter), or None for one grid per row.

    Returns:
        w_hat: `(out, in)` dequantized, in weight.dtype. With blocksize=None it equals
        `dequantize_zeropoint(*quantize_zeropoint(weight, bits, axis=0))`.

    Raises:
        TypeError, ValueError: bad weight, bits or blocksize.
    """
    weight = _check_weight(weight)
    group = _check_common(weight, bits, blocksize)
    w = weight.float()
    parts = []
    for g0 in range(0, w.shape[1], group):
        s, z = _grid(w[:, g0:g0 + group], bits)
        parts.append((_round(w[:, g0:g0 + group], s, z, bits) - z[:, None]) / s[:, None])
    return torch.cat(parts, dim=1).to(weight.dtype)


def gptq_quantize(weight: Tensor, inputs: Tensor, *, bits: int = 4, blocksize: int | None = None,
                  damp: float = 0.01, act_order: bool = False, lazy_batch: int = 128) -> tuple[Tensor, dict]:
    """GPTQ (Algorithm 1): quantize one column at a time, spreading its error over the columns not yet quantized.

    The layer-output error ||X W^T - X W_hat^T||^2 is a quadratic in each row with Hessian H = 2 X^T X. After
    column j is rounded, the optimal update of the remaining columns F (Optimal Brain Surgeon) is
    delta_F = -(w_j - q_j) / [H_F^-1]_jj * [H_F^-1]_{j,F}. GPTQ uses the same column order for every row, so the
    inverses for the shrinking sets F are the rows of the upper Cholesky factor U of H^-1 (H^-1 = U^T U):
    [H_F^-1]_jj = U_jj^2 and [H_F^-1]_{j,F} / [H_F^-1]_jj = U_{j,F} / U_jj. Updates are applied lazily: inside a
    batch of `lazy_batch` columns at once, to later columns once per batch (same result, fewer memory passes).

    Details as in the authors' code: damping adds `damp * mean(diag H)` to the diagonal; a "dead" input (always 0,
    diag H = 0) gets H_jj = 1 and its weights set to 0 (they never affect the output); with groups, each group's
    grid is computed when its first column is reached, from the already-updated weights; act_order processes
    columns by decreasing diag H (groups then follow that order; `g_idx` says which group each column uses).

    Args:
        weight: `(out, in)` floating point (nn.Linear.weight).
        inputs: `(N, in)` calibration activations (the layer's inputs; flatten batch and sequence), on the
            weight's device. Every tensor returned is on that device (CPU or CUDA).
        bits: 2..8.
        blocksize: group size along `in` (the last group may be shorter), or None for one grid per row.
        damp: fraction of the mean Hessian diagonal added to it (>= 0); raise it if the Cholesky factorisation fails.
        act_order: quantize the columns with the largest diag H (most activation energy) first.
        lazy_batch: columns per lazy batch B (128 in the paper); changes speed, not the result.

    Returns:
        w_hat: `(out, in)` dequantized weights, in weight.dtype.
        info: "q" `(out, in)` uint8 codes; "scale", "zero_point" `(out, n_groups)` float32 / int32 (w_hat = (q - z)/s);
            "g_idx" `(in,)` group of each column; "perm" `(in,)` the processing order (None without act_order);
            "damp" the value added to diag H; "loss" the objective the algorithm tracks,
            sum_j (w_j - q_j)^2 / (2 U_jj^2) = ||(W - W_hat) X^T||^2 + damp/2 ||W - W_hat||^2 (dead columns aside).

    Raises:
        TypeError, ValueError: bad arguments, or H + damping not positive definite (the message says what to change).
    """
    weight = _check_weight(weight)
    n_out, n_in = weight.shape
    X = _check_inputs(inputs, n_in, weight.device)
    group = _check_common(weight, bits, blocksize)
    if isinstance(damp, bool) or not isinstance(damp, (int, float)) or not damp >= 0:
        raise ValueError(f"damp must be a number >= 0 (0.01 in the paper), got {damp!r}")
    if not isinstance(act_order, bool):
        raise TypeError(f"act_order must be True or False, got {act_order!r}")
    _check_int("lazy_batch", lazy_batch, 1)

    W = weight.double().clone()  # (out, in); float64: the Cholesky of a damped Gram matrix stays accurate
    X = X.double()
    H = 2 * X.T @ X  # (in, in)
    row_s, row_z = _grid(W, bits)  # the per-row grid comes from the original weights, as RTN's
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    lam = damp * torch.diag(H).mean().item()
    H += lam * torch.eye(n_in, dtype=H.dtype, device=H.device)

    dev = W.device  # every tensor below lives on the weight's device (CPU or CUDA)
    perm = torch.argsort(torch.diag(H), descending=True) if act_order else torch.arange(n_in, device=dev)
    W, H = W[:, perm], H[perm][:, perm]
    try:
        L = torch.linalg.cholesky(H)
        U = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)  # (in, in): H^-1 = U^T U
    except torch.linalg.LinAlgError as e:
        raise ValueError(f"H = 2 X^T X + {lam:.3g} I is not positive definite: raise damp (now {damp}) or use more "
                         f"calibration rows (now {X.shape[0]} for {n_in} input features)") from e

    Q = torch.zeros_like(W)  # codes, in processing order
    n_groups = -(-n_in // group)
    scale = torch.zeros(n_out, n_groups, device=dev)  # float32, as quant.py's scales
    zero = torch.zeros(n_out, n_groups, device=dev)
    loss = torch.zeros((), dtype=W.dtype, device=dev)  # a tensor: no GPU sync per column
    for i1 in range(0, n_in, lazy_batch):
        i2 = min(i1 + lazy_batch, n_in)
        W1, Err1 = W[:, i1:i2].clone(), torch.zeros(n_out, i2 - i1, dtype=W.dtype, device=dev)  # (out, b)
        for i in range(i2 - i1):
            j = i1 + i
            if j % group == 0:
                g = j // group
                if blocksize is None:
                    s, z = row_s, row_z
                else:  # the group's current values: in-batch columns are up to date, later ones miss this batch's
                    end = min(j + group, n_in)
                    cur = torch.cat([W1[:, i:], W[:, i2:end] - Err1[:, :i] @ U[i1:j, i2:end]], dim=1)[:, :end - j]
                    s, z = _grid(cur, bits)
                scale[:, g], zero[:, g] = s, z
            w, d = W1[:, i], U[j, j]  # (out,), scalar
            q = _round(w, s, z, bits)
            err = (w - (q - z.double()) / s.double()) / d  # (out,)
            W1[:, i:] -= err[:, None] * U[j, i1 + i:i2][None, :]  # OBS update of this batch's remaining columns
            Err1[:, i], Q[:, j] = err, q
            loss += err.pow(2).sum() / 2
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]  # the lazy update of all later columns, once per batch

    inv = torch.argsort(perm)
    g_idx = (torch.arange(n_in, device=dev) // group)[inv]  # (in,) group of each original column
    q_codes = Q[:, inv].to(torch.uint8)
    zero_point = zero.to(torch.int32)
    w_hat = _dequantize(q_codes, scale, zero_point, g_idx).to(weight.dtype)
    info = {"q": q_codes, "scale": scale, "zero_point": zero_point, "g_idx": g_idx,
            "perm": perm if act_order else None, "damp": lam, "loss": loss.item()}
    return w_hat, info


def layer_output_error(weight: Tensor, w_hat: Tensor, inputs: Tensor) -> float:
    """Relative layer-output error ||X W^T - X W_hat^T||_F^2 / ||X W^T||_F^2 (float64; 0 when W_hat = W).

    Args:
        weight, w_hat: `(out, in)`. inputs: `(N, in)`, on the weight's device.

    Raises:
        TypeError, ValueError: shapes that do not match, or X W^T = 0 (the ratio is undefined).
    """
    weight = _check_weight(weight)
    if not isinstance(w_hat, Tensor) or w_hat.shape != weight.shape:
        raise ValueError(f"w_hat must be a tensor of the weight's shape {tuple(weight.shape)}, got "
                         f"{tuple(getattr(w_hat, 'shape', ()))}")
    X = _check_inputs(inputs, weight.shape[1], weight.device).double()
    ref = X @ weight.double().T  # (N, out)
    denom = ref.pow(2).sum().item()
    if denom == 0:
        raise ValueError("X W^T is all zeros: the relative error is undefined; use other inputs")
    return (ref - X @ w_hat.double().to(X.device).T).pow(2).sum().item() / denom
