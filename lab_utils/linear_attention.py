"""Linear attention: softmax replaced by a kernel feature map, in parallel and recurrent form.

Katharopoulos et al. (2020), "Transformers are RNNs": with `phi(x) = elu(x) + 1`, attention becomes
`phi(Q) (phi(K)^T V) / (phi(Q) S)` where `S = sum_j phi(K_j)` is a vector in R^D, so the cost is O(T D D_v) instead
of O(T^2 D). Causally, the sums run over j <= i: cumulative sums (parallel, a D x D_v state per position) or a
recurrence over t with a state `S_t` (D x D_v) and a normaliser `z_t` (D), or chunk by chunk (a loop over T / C
chunks, quadratic inside each chunk of C tokens). Chapter "Efficient attention"
(chapters/05_efficient_attention). Shapes `(..., T, D)` for queries and keys, `(..., T, D_v)` for values.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "elu_feature_map",
    "linear_attention",
    "linear_attention_chunked",
    "linear_attention_recurrent",
    "linear_attention_weights",
    "recurrent_step",
]

EPS = 1e-6  # added to the normaliser, as in the authors' code (fast-transformers, LinearAttention.eps)

FeatureMap = Callable[[Tensor], Tensor]


def elu_feature_map(x: Tensor) -> Tensor:
    """The feature map of Katharopoulos et al. (2020): `phi(x) = elu(x) + 1`, elementwise and always > 0.

    Positive features make every similarity `phi(q) . phi(k)` positive, so the normalised weights are a
    distribution, as softmax's are; `elu + 1` keeps a gradient for negative inputs, unlike `relu`.

    Args:
        x: any floating-point tensor, e.g. queries `(..., T, D)`.

    Returns:
        Tensor of the same shape, every entry > 0 (exactly `x + 1` for `x > 0`, `exp(x)` for `x <= 0`).
    """
    _check_float("x", x)
    return F.elu(x) + 1


def _check_float(name: str, x: object) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}; convert it with `.float()`")


def _check_qkv(q: Tensor, k: Tensor, v: Tensor, *, causal: bool) -> None:
    """Raise a clear error unless q `(..., T_q, D)`, k `(..., T_k, D)`, v `(..., T_k, D_v)` fit together."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        _check_float(name, x)
        if x.ndim < 2:
            raise ValueError(f"{name} must have shape (..., T, D), got shape {tuple(x.shape)}")
    if not q.dtype == k.dtype == v.dtype:
        raise TypeError(f"q, k and v must have the same dtype, got {q.dtype}, {k.dtype} and {v.dtype}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must have the same feature size D, got {q.shape[-1]} and {k.shape[-1]}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v must have the same number of positions T, got {k.shape[-2]} and {v.shape[-2]}")
    if not q.shape[:-2] == k.shape[:-2] == v.shape[:-2]:
        raise ValueError(
            f"q, k and v must have the same batch/head dims, got {tuple(q.shape[:-2])}, {tuple(k.shape[:-2])} and "
            f"{tuple(v.shape[:-2])}"
        )
    if causal and q.shape[-2] != k.shape[-2]:
        raise ValueError(f"causal attention needs as many queries as keys, got T_q={q.shape[-2]}, T_k={k.shape[-2]}")


def linear_attention_weights(
    q: Tensor, k: Tensor, *, causal: bool = False, feature_map: FeatureMap = elu_feature_map, eps: float = EPS
) -> Tensor:
    """The weights linear attention gives, written out as a `(T_q, T_k)` matrix (for plots and tests only).

    `A_ij = phi(q_i) . phi(k_j) / (sum_j' phi(q_i) . phi(k_j') + eps)`, with `j, j' <= i` when causal. This is the
    quadratic way to compute linear attention: `linear_attention(q, k, v) == linear_attention_weights(q, k) @ v`.

    Args:
        q: queries, shape `(..., T_q, D)`.
        k: keys, shape `(..., T_k, D)`.
        causal: keep only keys `j <= i` (needs `T_q == T_k`).
        feature_map: `phi`, applied to q and k; it must return positive features for the rows to be distributions.
        eps: added to each row's normaliser.

    Returns:
        Weights of shape `(..., T_q, T_k)`, non-negative, each row summing to 1 (up to `eps`).

    Raises:
        TypeError, ValueError: as `linear_attention`.
    """
    _check_qkv(q, k, k, causal=causal)
    sim = feature_map(q) @ feature_map(k).transpose(-2, -1)  # (..., T_q, T_k) phi(Q) phi(K)^T
    if causal:
        T = q.shape[-2]
        sim = sim * torch.ones(T, T, dtype=torch.bool, device=q.device).tril()  # j <= i
    return sim / (sim.sum(dim=-1, keepdim=True) + eps)


def linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool = False,
    feature_map: FeatureMap = elu_feature_map,
    eps: float = EPS,
) -> Tensor:
    """Linear attention in parallel form, `phi(Q) (phi(K)^T V) / (phi(Q) S)` (Katharopoulos et al. 2020, eq. 5-6).

    Non-causal: `KV = phi(K)^T V` `(D, D_v)` and `S = sum_j phi(K_j)` `(D,)` are computed once, so the cost is
    O(T D D_v) time and no `(T, T)` matrix is formed. Causal: query `i` uses `KV_i = sum_{j<=i} phi(K_j) V_j^T` and
    `S_i = sum_{j<=i} phi(K_j)`, built with cumulative sums; this materialises one `(D, D_v)` state per position,
    i.e. `T * D * D_v` values per head (see `linear_attention_recurrent` for the constant-memory loop).

    Args:
        q: queries, shape `(..., T_q, D)`.
        k: keys, shape `(..., T_k, D)`.
        v: values, shape `(..., T_k, D_v)`.
        causal: query `i` attends keys `j <= i` only (needs `T_q == T_k`).
        feature_map: `phi`, applied to q and k (default `elu(x) + 1`).
        eps: added to the normaliser `phi(q_i) . S_i` (> 0 for positive features) against division by ~0.

    Returns:
        Output of shape `(..., T_q, D_v)`.

    Raises:
        TypeError: if an input is not a floating-point tensor or the dtypes differ.
        ValueError: if the shapes do not fit together (see the message).
    """
    _check_qkv(q, k, v, causal=causal)
    phi_q, phi_k = feature_map(q), feature_map(k)  # (..., T_q, D), (..., T_k, D)
    if not causal:
        kv = phi_k.transpose(-2, -1) @ v  # (..., D, D_v)   phi(K)^T V, once for all queries
        s = phi_k.sum(dim=-2)  # (..., D)   S = sum_j phi(K_j): a vector, not a D x D matrix
        num = phi_q @ kv  # (..., T_q, D_v)
        den = (phi_q @ s.unsqueeze(-1)).squeeze(-1)  # (..., T_q)   phi(Q_i) . S
        return num / (den.unsqueeze(-1) + eps)
    kv = (phi_k.unsqueeze(-1) * v.unsqueeze(-2)).cumsum_(dim=-3)  # (..., T, D, D_v)   KV_i = sum_{j<=i}, in place
    s = torch.cumsum(phi_k, dim=-2)  # (..., T, D)   S_i = sum_{j<=i} phi(K_j)
    num = (phi_q.unsqueeze(-2) @ kv).squeeze(-2)  # (..., T, D_v)   phi(Q_i)^T KV_i, one position at a time
    den = (phi_q * s).sum(dim=-1)  # (..., T)
    return num / (den.unsqueeze(-1) + eps)


def recurrent_step(
    S: Tensor,
    z: Tensor,
    q_t: Tensor,
    k_t: Tensor,
    v_t: Tensor,
    *,
    feature_map: FeatureMap = elu_feature_map,
    eps: float = EPS,
) -> tuple[Tensor, Tensor, Tensor]:
    """One step of causal linear attention as an RNN (Katharopoulos et al. 2020, eq. 16-20).

    First add token t to the state (a token attends to itself), then read it with the query:
    `S_t = S_{t-1} + phi(k_t) v_t^T`, `z_t = z_{t-1} + phi(k_t)`, `out_t = phi(q_t)^T S_t / (phi(q_t) . z_t + eps)`.
    The inputs are not modified.

    Args:
        S: state `sum_{j<t} phi(k_j) v_j^T`, shape `(..., D, D_v)` (zeros before the first token).
        z: normaliser `sum_{j<t} phi(k_j)`, shape `(..., D)` (zeros before the first token).
        q_t: query of token t, shape `(..., D)`.
        k_t: key of token t, shape `(..., D)`.
        v_t: value of token t, shape `(..., D_v)`.
        feature_map: `phi` (default `elu(x) + 1`).
        eps: added to the normaliser.

    Returns:
        `(out_t, S_t, z_t)` with shapes `(..., D_v)`, `(..., D, D_v)`, `(..., D)`.

    Raises:
        TypeError: if an input is not a floating-point tensor.
        ValueError: if the shapes do not fit together.
    """
    for name, x in (("S", S), ("z", z), ("q_t", q_t), ("k_t", k_t), ("v_t", v_t)):
        _check_float(name, x)
    D, D_v = k_t.shape[-1], v_t.shape[-1]
    if q_t.shape != k_t.shape or z.shape != k_t.shape:
        raise ValueError(
            f"q_t, k_t and z must all have shape (..., D), got {tuple(q_t.shape)}, {tuple(k_t.shape)} and "
            f"{tuple(z.shape)}"
        )
    if S.shape != (*k_t.shape[:-1], D, D_v) or v_t.shape[:-1] != k_t.shape[:-1]:
        raise ValueError(
            f"S must have shape (..., D, D_v) = {(*k_t.shape[:-1], D, D_v)} and v_t (..., D_v), got S "
            f"{tuple(S.shape)} and v_t {tuple(v_t.shape)}"
        )
    phi_q, phi_k = feature_map(q_t), feature_map(k_t)  # (..., D)
    S = S + phi_k.unsqueeze(-1) * v_t.unsqueeze(-2)  # (..., D, D_v)   outer product phi(k_t) v_t^T
    z = z + phi_k  # (..., D)
    num = (phi_q.unsqueeze(-2) @ S).squeeze(-2)  # (..., D_v)
    den = (phi_q * z).sum(dim=-1, keepdim=True)  # (..., 1)
    return num / (den + eps), S, z


def linear_attention_recurrent(
    q: Tensor, k: Tensor, v: Tensor, *, feature_map: FeatureMap = elu_feature_map, eps: float = EPS
) -> Tensor:
    """Causal linear attention as a loop over positions: constant memory, T sequential steps.

    Equal (up to rounding) to `linear_attention(q, k, v, causal=True)`, but only one state `(D, D_v)` and one
    normaliser `(D,)` per head are alive at a time, and step t cannot start before step t - 1 is done.

    Args:
        q: queries, shape `(..., T, D)`.
        k: keys, shape `(..., T, D)`.
        v: values, shape `(..., T, D_v)`.
        feature_map: `phi` (default `elu(x) + 1`).
        eps: added to the normaliser.

    Returns:
        Output of shape `(..., T, D_v)`.

    Raises:
        TypeError, ValueError: as `linear_attention` with `causal=True`.
    """
    _check_qkv(q, k, v, causal=True)
    *batch, T, D = k.shape
    S = q.new_zeros(*batch, D, v.shape[-1])  # (..., D, D_v)
    z = q.new_zeros(*batch, D)  # (..., D)
    outs = []
    for t in range(T):
        out_t, S, z = recurrent_step(S, z, q[..., t, :], k[..., t, :], v[..., t, :], feature_map=feature_map, eps=eps)
        outs.append(out_t)
    return torch.stack(outs, dim=-2)  # (..., T, D_v)


def linear_attention_chunked(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    chunk_size: int = 64,
    feature_map: FeatureMap = elu_feature_map,
    eps: float = EPS,
) -> Tensor:
    """Causal linear attention chunk by chunk: a loop over `ceil(T / C)` chunks instead of T tokens.

    Inside a chunk of C tokens, the causal `(C, C)` similarity `phi(Q_c) phi(K_c)^T` is used directly (quadratic,
    but only in C); the earlier chunks enter through the state `S` `(D, D_v)` and normaliser `z` `(D,)` carried
    from chunk to chunk, as in the recurrence. Memory per head: one state plus one `(C, C)` block; `C = 1` is the
    recurrence, `C = T` the explicit causal weight matrix. The chunkwise form is how fast causal linear-attention
    kernels are organised (e.g. Yang et al. 2024, "Gated linear attention").

    Args:
        q: queries, shape `(..., T, D)`.
        k: keys, shape `(..., T, D)`.
        v: values, shape `(..., T, D_v)`.
        chunk_size: C, tokens per chunk (>= 1); the last chunk may be shorter.
        feature_map: `phi` (default `elu(x) + 1`).
        eps: added to the normaliser.

    Returns:
        Output of shape `(..., T, D_v)`, equal (up to rounding) to `linear_attention(q, k, v, causal=True)`.

    Raises:
        TypeError, ValueError: as `linear_attention` with `causal=True`, or if `chunk_size` is not an int >= 1.
    """
    _check_qkv(q, k, v, causal=True)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    phi_q, phi_k = feature_map(q), feature_map(k)  # (..., T, D)
    *batch, T, D = k.shape
    S = q.new_zeros(*batch, D, v.shape[-1])  # (..., D, D_v)   sum over earlier chunks of phi(K_j) V_j^T
    z = q.new_zeros(*batch, 1, D)  # (..., 1, D)   sum over earlier chunks of phi(K_j)
    outs = []
    for start in range(0, T, chunk_size):
        sl = slice(start, min(start + chunk_size, T))
        pq, pk, vc = phi_q[..., sl, :], phi_k[..., sl, :], v[..., sl, :]  # (..., C, D), (..., C, D), (..., C, D_v)
        sim = (pq @ pk.transpose(-2, -1)).tril()  # (..., C, C)   causal inside the chunk
        num = pq @ S + sim @ vc  # (..., C, D_v)   earlier chunks + this chunk
        den = (pq * z).sum(dim=-1) + sim.sum(dim=-1)  # (..., C)
        outs.append(num / (den.unsqueeze(-1) + eps))
        S = S + pk.transpose(-2, -1) @ vc
        z = z + pk.sum(dim=-2, keepdim=True)
    return torch.cat(outs, dim=-2)  # (..., T, D_v)
