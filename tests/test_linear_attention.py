"""Tests for lab_utils.linear_attention: parallel == explicit weights, recurrent == causal parallel, bad inputs."""

import pytest
import torch
import torch.nn.functional as F

from lab_utils.linear_attention import (
    elu_feature_map,
    linear_attention,
    linear_attention_chunked,
    linear_attention_recurrent,
    linear_attention_weights,
    recurrent_step,
)

TOL = {"rtol": 1e-10, "atol": 1e-10}  # float64: the forms differ only by summation order (~1e-15)


def qkv(*batch, T=7, D=4, D_v=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(*batch, T, d, generator=g, dtype=dtype) for d in (D, D, D_v))


def explicit(q, k, v, causal=False):
    """Linear attention the quadratic way: the (T x T) similarity phi(Q) phi(K)^T, rows normalised, times V."""
    sim = (F.elu(q) + 1) @ (F.elu(k) + 1).transpose(-2, -1)  # (..., T_q, T_k)
    if causal:
        sim = sim.tril()
    return (sim / sim.sum(dim=-1, keepdim=True)) @ v


def test_elu_feature_map_is_positive_and_matches_its_definition():
    x = torch.linspace(-20, 5, 101, dtype=torch.float64)
    phi = elu_feature_map(x)
    assert (phi > 0).all()
    torch.testing.assert_close(phi[x > 0], x[x > 0] + 1)
    torch.testing.assert_close(phi[x <= 0], torch.exp(x[x <= 0]))


@pytest.mark.parametrize("causal", [False, True])
def test_parallel_form_equals_the_explicit_similarity_matrix(causal):
    q, k, v = qkv(2, 3)
    torch.testing.assert_close(linear_attention(q, k, v, causal=causal, eps=0.0), explicit(q, k, v, causal), **TOL)


def test_non_causal_allows_different_numbers_of_queries_and_keys():
    q, _, _ = qkv(2, T=5)
    _, k, v = qkv(2, T=9, seed=1)
    torch.testing.assert_close(linear_attention(q, k, v, eps=0.0), explicit(q, k, v), **TOL)


@pytest.mark.parametrize("causal", [False, True])
def test_weights_are_distributions_and_reproduce_the_output(causal):
    q, k, v = qkv(2, 3, T=9)
    w = linear_attention_weights(q, k, causal=causal, eps=0.0)
    assert w.shape == (2, 3, 9, 9)
    assert (w >= 0).all()
    torch.testing.assert_close(w.sum(dim=-1), torch.ones(2, 3, 9, dtype=torch.float64), **TOL)
    if causal:
        assert (w.triu(diagonal=1) == 0).all() and (w.diagonal(dim1=-2, dim2=-1) > 0).all()
    torch.testing.assert_close(w @ v, linear_attention(q, k, v, causal=causal, eps=0.0), **TOL)


def test_causal_output_at_i_ignores_later_tokens():
    q, k, v = qkv(T=8)
    k2, v2 = k.clone(), v.clone()
    k2[5:] += 3.0
    v2[5:] -= 2.0
    a, b = linear_attention(q, k, v, causal=True), linear_attention(q, k2, v2, causal=True)
    torch.testing.assert_close(a[:5], b[:5], **TOL)
    assert not torch.allclose(a[5:], b[5:])  # non-vacuity: the later rows do change


def test_last_causal_row_equals_the_non_causal_row():
    q, k, v = qkv(3, T=6)
    torch.testing.assert_close(linear_attention(q, k, v, causal=True)[..., -1, :],
                               linear_attention(q, k, v)[..., -1, :], **TOL)


@pytest.mark.parametrize("batch", [(), (2,), (2, 3)])
def test_recurrent_equals_causal_parallel(batch):
    q, k, v = qkv(*batch, T=11, D=5, D_v=3)
    rec = linear_attention_recurrent(q, k, v)
    assert rec.shape == (*batch, 11, 3)
    torch.testing.assert_close(rec, linear_attention(q, k, v, causal=True), **TOL)
    assert not torch.allclose(rec, linear_attention(q, k, v))  # non-vacuity: causal != non-causal


@pytest.mark.parametrize("chunk_size", [1, 3, 4, 11, 64])
def test_chunked_equals_causal_parallel(chunk_size):
    q, k, v = qkv(2, 3, T=11, D=5, D_v=3)  # 11 = 3 chunks of 4 minus one: a shorter last chunk
    torch.testing.assert_close(linear_attention_chunked(q, k, v, chunk_size=chunk_size),
                               linear_attention(q, k, v, causal=True), **TOL)


@pytest.mark.parametrize("chunk_size", [0, -2, 2.0, True])
def test_chunked_rejects_bad_chunk_sizes(chunk_size):
    q, k, v = qkv(T=4)
    with pytest.raises(ValueError, match="chunk_size must be an int >= 1"):
        linear_attention_chunked(q, k, v, chunk_size=chunk_size)


def test_recurrent_equals_causal_parallel_in_float32():
    q, k, v = qkv(2, 4, T=64, D=16, D_v=16, dtype=torch.float32)
    torch.testing.assert_close(linear_attention_recurrent(q, k, v), linear_attention(q, k, v, causal=True),
                               rtol=1e-4, atol=1e-5)  # float32, sums of up to 64 terms


def test_batch_and_head_dims_are_independent():
    q, k, v = qkv(2, 3)
    full = linear_attention(q, k, v)
    torch.testing.assert_close(full[1, 2], linear_attention(q[1, 2], k[1, 2], v[1, 2]), **TOL)


def test_recurrent_step_updates_before_reading_and_leaves_its_inputs_alone():
    _, k, v = qkv(T=1, D=3, D_v=2)
    q = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    S, z = torch.zeros(3, 2, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    out, S1, z1 = recurrent_step(S, z, q[0], k[0], v[0], eps=0.0)
    torch.testing.assert_close(out, v[0], **TOL)  # a lone token attends only to itself: weight 1
    torch.testing.assert_close(S1, torch.outer(elu_feature_map(k[0]), v[0]), **TOL)
    torch.testing.assert_close(z1, elu_feature_map(k[0]), **TOL)
    assert (S == 0).all() and (z == 0).all()


def test_identity_feature_map_is_the_lectures_unkernelised_form():
    q, k, v = qkv(T=5)
    sim = q @ k.T  # (T, T) may be negative: no longer a distribution, but the algebra still holds
    want = (sim / sim.sum(dim=-1, keepdim=True)) @ v
    torch.testing.assert_close(linear_attention(q, k, v, feature_map=lambda x: x, eps=0.0), want, **TOL)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((torch.ones(4, 3), torch.ones(4, 2), torch.ones(4, 3)), {}, ValueError, "same feature size D"),
        ((torch.ones(4, 3), torch.ones(4, 3), torch.ones(5, 3)), {}, ValueError, "same number of positions"),
        ((torch.ones(2, 4, 3), torch.ones(3, 4, 3), torch.ones(3, 4, 3)), {}, ValueError, "batch/head dims"),
        ((torch.ones(3, 3), torch.ones(4, 3), torch.ones(4, 3)), {"causal": True}, ValueError, "as many queries"),
        ((torch.ones(3), torch.ones(3), torch.ones(3)), {}, ValueError, r"shape \(\.\.\., T, D\)"),
        ((torch.ones(4, 3, dtype=torch.long),) * 3, {}, TypeError, r"floating-point.*\.float\(\)"),
        ((torch.ones(4, 3), torch.ones(4, 3, dtype=torch.float64), torch.ones(4, 3)), {}, TypeError, "same dtype"),
        (([[1.0]], torch.ones(1, 1), torch.ones(1, 1)), {}, TypeError, "q must be a torch.Tensor"),
    ],
)
def test_bad_inputs_raise_clear_errors(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        linear_attention(*args, **kwargs)


def test_recurrent_rejects_mismatched_shapes_and_integer_inputs():
    with pytest.raises(ValueError, match="as many queries"):
        linear_attention_recurrent(torch.ones(3, 2), torch.ones(4, 2), torch.ones(4, 2))
    S, z, x = torch.zeros(3, 2), torch.zeros(3), torch.ones(3)
    with pytest.raises(ValueError, match=r"S must have shape \(\.\.\., D, D_v\)"):
        recurrent_step(S.T, z, x, x, torch.ones(2))
    with pytest.raises(ValueError, match="q_t, k_t and z"):
        recurrent_step(S, torch.zeros(4), x, x, torch.ones(2))
    with pytest.raises(TypeError, match="v_t must be a floating-point"):
        recurrent_step(S, z, x, x, torch.ones(2, dtype=torch.int64))
    with pytest.raises(TypeError, match="floating-point"):
        elu_feature_map(torch.arange(3))
