"""Exercise check for chapter "Efficient attention": one step of causal linear attention as an RNN.

``fn(S, z, q_t, k_t, v_t) -> (out_t, S_t, z_t)`` for one head, with ``phi(x) = elu(x) + 1``:
``S_t = S + phi(k_t) v_t^T`` `(D, D_v)`, ``z_t = z + phi(k_t)`` `(D,)`, ``out_t = phi(q_t)^T S_t / (phi(q_t) . z_t)``
`(D_v,)` (Katharopoulos et al. 2020, eq. 16-20). The reference is ``lab_utils.linear_attention.recurrent_step``;
the check also runs the student's step over a whole sequence and compares with the causal parallel form.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lab_utils.checks.feedback import StudentFunction, exercise_check
from lab_utils.checks.feedback import fail as _fail
from lab_utils.checks.feedback import success as _success
from lab_utils.linear_attention import linear_attention, recurrent_step

__all__ = ["check_recurrent_step"]

_TOL = 1e-5  # float64 throughout; a student's eps (0 to 1e-6) moves the output by ~1e-6 relative at most


def _phi(x: Tensor) -> Tensor:
    return F.elu(x) + 1


def _cases() -> list[tuple[Tensor, Tensor, Tensor, Tensor, Tensor]]:
    """(S, z, q_t, k_t, v_t) in float64. The states are those of earlier tokens, never zero, so that reading the
    state before or after adding token t gives different outputs; D == D_v in the first case, so that a
    transposed outer product has the right shape and can be recognised."""
    g = torch.Generator().manual_seed(0)
    cases = []
    for D, D_v, n_before in ((4, 4, 3), (3, 5, 2)):
        k_prev = torch.randn(n_before, D, generator=g, dtype=torch.float64)
        v_prev = torch.randn(n_before, D_v, generator=g, dtype=torch.float64)
        S = _phi(k_prev).T @ v_prev  # (D, D_v)
        z = _phi(k_prev).sum(dim=0)  # (D,)
        q_t, k_t = (2 * torch.randn(D, generator=g, dtype=torch.float64) for _ in range(2))  # some entries < 0
        v_t = torch.randn(D_v, generator=g, dtype=torch.float64)
        cases.append((S, z, q_t, k_t, v_t))
    return cases


def _mistakes(S: Tensor, z: Tensor, q: Tensor, k: Tensor, v: Tensor) -> list[tuple[Tensor, str]]:
    """Outputs out_t of the typical wrong steps, each with the hint that names the mistake."""
    pq, pk = _phi(q), _phi(k)
    S_new, z_new = S + torch.outer(pk, v), z + pk
    out = []
    out.append((pq @ S_new, "the output is not normalised: divide phi(q_t)^T S_t by phi(q_t) . z_t (the "
                            "normaliser z is what makes the weights sum to 1)"))
    out.append(((pq @ S) / (pq @ z), "you read the state before adding token t (off by one): update S and z with "
                                     "phi(k_t) and v_t first, then read them with phi(q_t), so a token sees itself"))
    out.append(((pq @ S_new) / z_new.sum(), "you normalised by the sum of phi(k) alone: the normaliser is the dot "
                                            "product phi(q_t) . z_t, which depends on the query"))
    if S.shape[0] == S.shape[1]:
        S_tr = S + torch.outer(v, pk)
        out.append(((pq @ S_tr) / (pq @ z_new), "the outer product is transposed: add phi(k_t) v_t^T "
                                                "(torch.outer(phi(k_t), v_t), shape (D, D_v)), not v_t phi(k_t)^T"))
    S_raw, z_raw = S + torch.outer(k, v), z + k
    out.append(((q @ S_raw) / (q @ z_raw), "you used the raw q_t and k_t: apply the feature map phi(x) = elu(x) + 1 "
                                           "to both before using them"))
    out.append(((q @ S_new) / (q @ z_new), "you used the raw q_t: apply phi(x) = elu(x) + 1 to the query too"))
    out.append(((pq @ S_raw) / (pq @ z_raw), "you used the raw k_t: apply phi(x) = elu(x) + 1 to the key too, in "
                                             "both S and z"))
    ek, eq = F.elu(k), F.elu(q)
    out.append(((eq @ (S + torch.outer(ek, v))) / (eq @ (z + ek)), "phi is elu(x) + 1, not elu(x): the + 1 keeps "
                                                                   "every feature positive"))
    return out


def _close(got: Tensor, want: Tensor) -> bool:
    return got.shape == want.shape and torch.allclose(got, want, rtol=_TOL, atol=_TOL)


def _as_float64(value: object, what: str, call: str, shape: tuple[int, ...]) -> Tensor:
    if not isinstance(value, Tensor):
        _fail(f"{call} returned {what} as a {type(value).__name__}; return a torch.Tensor of shape {shape}")
    if tuple(value.shape) != shape:
        _fail(f"{call} returned {what} of shape {tuple(value.shape)}; expected {shape}")
    return value.detach().double().cpu()


@exercise_check
def check_recurrent_step(fn: StudentFunction) -> None:
    """Check ``fn(S, z, q_t, k_t, v_t) -> (out_t, S_t, z_t)``: one step of recurrent linear attention (one head).

    Shapes: ``S`` `(D, D_v)`, ``z`` `(D,)`, ``q_t`` and ``k_t`` `(D,)`, ``v_t`` `(D_v,)`. Tried on two states of
    earlier tokens (D = D_v = 4, and D = 3, D_v = 5), then chained from zero states over 6 tokens and compared with
    ``linear_attention(q, k, v, causal=True)``. Modifying ``S`` and ``z`` in place is allowed.

    Raises:
        AssertionError: naming the first wrong output and, when recognisable, the mistake.
    """
    for S0, z0, q, k, v in _cases():
        D, D_v = S0.shape
        call = f"{fn.name}(S {tuple(S0.shape)}, z ({D},), q_t ({D},), k_t ({D},), v_t ({D_v},))"
        got = fn(S0.clone(), z0.clone(), q.clone(), k.clone(), v.clone())
        if not isinstance(got, (tuple, list)) or len(got) != 3:
            _fail(f"{call} returned {type(got).__name__}; return three tensors: (out_t, S_t, z_t)")
        out, S_t, z_t = (_as_float64(x, w, call, s) for x, w, s in zip(got, ("out_t", "S_t", "z_t"),
                                                                        ((D_v,), (D, D_v), (D,)), strict=True))
        want_out, want_S, want_z = recurrent_step(S0, z0, q, k, v)
        if not _close(out, want_out):
            for wrong, hint in _mistakes(S0, z0, q, k, v):
                if _close(out, wrong):
                    _fail(f"{call}: {hint}")
            _fail(f"{call}: out_t is {out.tolist()}, expected {want_out.tolist()}: out_t = phi(q_t)^T S_t / "
                  "(phi(q_t) . z_t) with S_t and z_t already including token t")
        if not _close(S_t, want_S):
            if _close(S_t, S0):
                _fail(f"{call}: out_t is right but the returned S_t is the old state: return S + phi(k_t) v_t^T")
            _fail(f"{call}: out_t is right but the returned S_t is not S + phi(k_t) v_t^T")
        if not _close(z_t, want_z):
            if _close(z_t, z0):
                _fail(f"{call}: out_t is right but the returned z_t is the old normaliser: return z + phi(k_t)")
            _fail(f"{call}: out_t is right but the returned z_t is not z + phi(k_t)")
    g = torch.Generator().manual_seed(1)
    T, D, D_v = 6, 3, 2
    q, k, v = (torch.randn(T, d, generator=g, dtype=torch.float64) for d in (D, D, D_v))
    S, z = torch.zeros(D, D_v, dtype=torch.float64), torch.zeros(D, dtype=torch.float64)
    outs = []
    for t in range(T):
        out, S, z = fn(S, z, q[t].clone(), k[t].clone(), v[t].clone())
        outs.append(torch.as_tensor(out).detach().double().cpu())
    want = linear_attention(q, k, v, causal=True)  # (T, D_v)
    for t in range(T):
        if not _close(outs[t], want[t]):
            _fail(f"chaining {fn.name} from zero states over {T} tokens: token {t} gives {outs[t].tolist()}, "
                  f"the causal parallel form {want[t].tolist()} (does your step carry S and z forward?)")
    _success("recurrent step right: state and normaliser updated with phi(k_t) before phi(q_t) reads them; "
             f"chained over {T} tokens it equals causal linear attention")
