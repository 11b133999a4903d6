"""Tests for lab_utils.checks.linear_attention: the reference passes, each typical wrong step is named."""

import pytest
import torch
import torch.nn.functional as F

from lab_utils.checks import check_recurrent_step
from lab_utils.linear_attention import recurrent_step


def phi(x):
    return F.elu(x) + 1


def my_recurrent_step(S, z, q_t, k_t, v_t):
    raise NotImplementedError  # your code here


def plain_step(S, z, q_t, k_t, v_t):  # what a student writes: torch.outer, no eps
    S = S + torch.outer(phi(k_t), v_t)
    z = z + phi(k_t)
    return phi(q_t) @ S / (phi(q_t) @ z), S, z


def in_place_step(S, z, q_t, k_t, v_t):  # updating the state in place is fine
    S += torch.outer(phi(k_t), v_t)
    z += phi(k_t)
    return phi(q_t) @ S / (phi(q_t) @ z + 1e-6), S, z


def test_reference_and_student_versions_pass(capsys):
    assert check_recurrent_step(recurrent_step) is True
    assert check_recurrent_step(plain_step) is True
    assert check_recurrent_step(in_place_step) is True
    assert capsys.readouterr().out.count("✓ recurrent step right") == 3


def test_stub_returns_false_and_says_not_written(capsys):
    assert check_recurrent_step(my_recurrent_step) is False
    assert capsys.readouterr().out.startswith("✗ my_recurrent_step is not written yet")


def no_normaliser(S, z, q, k, v):
    S, z = S + torch.outer(phi(k), v), z + phi(k)
    return phi(q) @ S, S, z


def read_before_update(S, z, q, k, v):
    out = phi(q) @ S / (phi(q) @ z)
    return out, S + torch.outer(phi(k), v), z + phi(k)


def raw_q_and_k(S, z, q, k, v):
    S, z = S + torch.outer(k, v), z + k
    return q @ S / (q @ z), S, z


def raw_q(S, z, q, k, v):
    S, z = S + torch.outer(phi(k), v), z + phi(k)
    return q @ S / (q @ z), S, z


def raw_k(S, z, q, k, v):
    S, z = S + torch.outer(k, v), z + k
    return phi(q) @ S / (phi(q) @ z), S, z


def transposed(S, z, q, k, v):
    S, z = S + torch.outer(v, phi(k)), z + phi(k)
    return phi(q) @ S / (phi(q) @ z), S, z


def sum_of_phi_k(S, z, q, k, v):
    S, z = S + torch.outer(phi(k), v), z + phi(k)
    return phi(q) @ S / z.sum(), S, z


def elu_without_one(S, z, q, k, v):
    e_q, e_k = F.elu(q), F.elu(k)
    S, z = S + torch.outer(e_k, v), z + e_k
    return e_q @ S / (e_q @ z), S, z


def old_state_returned(S, z, q, k, v):
    out, _, z_new = plain_step(S, z, q, k, v)
    return out, S, z_new


def old_z_returned(S, z, q, k, v):
    out, S_new, _ = plain_step(S, z, q, k, v)
    return out, S_new, z


@pytest.mark.parametrize(
    ("fn", "match"),
    [
        (no_normaliser, "not normalised.*phi\\(q_t\\) . z_t"),
        (read_before_update, "before adding token t \\(off by one\\)"),
        (raw_q_and_k, "raw q_t and k_t"),
        (raw_q, "raw q_t: apply phi"),
        (raw_k, "raw k_t"),
        (transposed, "outer product is transposed"),
        (sum_of_phi_k, "sum of phi\\(k\\) alone"),
        (elu_without_one, "not elu\\(x\\): the \\+ 1"),
        (old_state_returned, "returned S_t is the old state"),
        (old_z_returned, "returned z_t is the old normaliser"),
        (lambda S, z, q, k, v: plain_step(S, z, q, k, v)[0], "return three tensors"),
        (lambda S, z, q, k, v: (plain_step(S, z, q, k, v)[0][:2], S, z), r"out_t of shape \(2,\); expected \(4,\)"),
        (lambda S, z, q, k, v: (plain_step(S, z, q, k, v)[0].tolist(), S, z), "out_t as a list"),
    ],
)
def test_typical_mistakes_are_named(fn, match):
    with pytest.raises(AssertionError, match=match):
        check_recurrent_step(fn)


def test_a_step_that_does_not_carry_the_state_fails_on_the_chain():
    calls = []

    def reset_every_time(S, z, q, k, v):
        calls.append(1)
        if len(calls) > 2:  # the two single-step cases pass; in the chain the state is dropped
            S, z = torch.zeros_like(S), torch.zeros_like(z)
        return plain_step(S, z, q, k, v)

    with pytest.raises(AssertionError, match="chaining reset_every_time .* carry S and z forward"):
        check_recurrent_step(reset_every_time)
    assert len(calls) > 3  # non-vacuity: it got past the single steps and into the chain


def test_other_exceptions_propagate_with_a_note():
    def bad(S, z, q, k, v):
        return torch.cat([S, z]), S, z  # (D, D_v) and (D,): a shape error in the student's own code

    with pytest.raises(RuntimeError) as info:
        check_recurrent_step(bad)
    assert any("raised inside bad" in note for note in info.value.__notes__)
