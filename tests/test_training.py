"""Tests for lab_utils.training: the loop against a hand-written AdamW loop, schedules against transformers',
validation / early stopping, callbacks, and what the loop must teach a decoder (nothing, on random tokens)."""

import math

import pytest
import torch
import transformers

from lab_utils.models import TinyTransformer, TransformerConfig
from lab_utils.objectives import mlm_loss, next_token_loss
from lab_utils.training import evaluate, lr_factor, train

V = 16  # tiny vocabulary: ln 16 = 2.77 nats is the loss of a uniform guess


def tiny_model(seed=0, **kwargs):
    torch.manual_seed(seed)
    return TinyTransformer(TransformerConfig(vocab_size=V, max_len=16, d_model=32, n_layers=1, n_heads=2, d_ff=64,
                                             **kwargs))


def random_ids(B, T, seed, low=0):
    return torch.randint(low, V, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
@pytest.mark.parametrize("warmup", [0, 3])
def test_lr_factor_matches_transformers_schedules(schedule, warmup):
    steps = 12
    make = {"constant": transformers.get_constant_schedule_with_warmup,
            "linear": transformers.get_linear_schedule_with_warmup,
            "cosine": transformers.get_cosine_schedule_with_warmup}[schedule]
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = make(opt, warmup) if schedule == "constant" else make(opt, warmup, steps)
    want = []
    for _ in range(steps):
        want.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    got = [lr_factor(s, steps=steps, warmup_steps=warmup, schedule=schedule) for s in range(1, steps + 1)]
    assert got == pytest.approx(want, abs=1e-12)
    assert len(set(got)) > (1 if schedule != "constant" or warmup else 0)  # non-vacuity: the factor does change


@pytest.mark.parametrize("grad_clip", [None, 0.05])  # 0.05 is below the gradient norms here: clipping is active
@pytest.mark.parametrize("as_iterator", [False, True])
def test_train_equals_a_hand_written_adamw_loop(grad_clip, as_iterator):
    # Same init, same batches (2 batches cycled over 5 steps), same AdamW: the parameters must agree to rounding.
    # Catches a missing optimizer.zero_grad (gradients accumulate from step 2 on), a wrong clip or a skipped batch.
    batches = [random_ids(4, 10, seed=s) for s in (1, 2)]
    model, ref = tiny_model(), tiny_model()
    opt = torch.optim.AdamW(ref.parameters(), lr=3e-3, weight_decay=0.01)
    for step in range(5):
        loss, _ = next_token_loss(ref, batches[step % 2])
        opt.zero_grad()
        loss.backward()
        if grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(ref.parameters(), grad_clip)
            assert norm > grad_clip  # the clip changes the update
        opt.step()
    history = train(model, iter(batches) if as_iterator else batches, next_token_loss, steps=5, lr=3e-3,
                    grad_clip=grad_clip, progress=False)
    for (name, p), q in zip(model.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=f"{name} differs from the hand-written loop")
    assert history.steps == [1, 2, 3, 4, 5] and len(history.train_loss) == 5
    assert not torch.equal(model.blocks[0].mlp.fc1.weight, tiny_model().blocks[0].mlp.fc1.weight)  # it trained


def test_history_lr_follows_the_schedule():
    history = train(tiny_model(), [random_ids(2, 8, 0)], next_token_loss, steps=10, lr=0.01, warmup_steps=3,
                    schedule="cosine", progress=False)
    want = [0.01 * lr_factor(s, steps=10, warmup_steps=3, schedule="cosine") for s in range(1, 11)]
    assert history.lr == pytest.approx(want)
    assert history.lr[0] == 0 and max(history.lr) == pytest.approx(0.01)  # warmup from 0 up to the peak


def test_a_decoder_cannot_learn_iid_random_tokens():
    # Tokens drawn i.i.d. uniformly: with its causal mask the best a decoder can do is ln V = 2.77 nats. Without it
    # (e.g. next_token_loss calling causal=False) position t sees token t + 1 and copies it: measured 0.2 nats after
    # 150 steps. Fresh batches each step, so memorising them is no way down either. Measured with the mask: 2.78.
    batches = [random_ids(8, 16, seed=100 + s) for s in range(150)]
    model = tiny_model()
    train(model, batches, next_token_loss, steps=150, lr=1e-2, progress=False)
    held_out = evaluate(model, [random_ids(32, 16, seed=1)], next_token_loss)
    assert held_out > math.log(V) - 0.1, f"held-out loss {held_out:.2f} < ln V: the decoder sees the future"


def test_mlm_overfits_one_batch():
    # Tokens drawn uniformly from 12 ids: no context-free guess beats ln 12 = 2.5 nats. Memorising one batch (new
    # masks every step) must go far below; measured ~0.7 after 100 steps (seeds 0-1), threshold half of ln 12.
    ids = random_ids(4, 12, seed=0, low=4)
    ids[:, 0] = 1  # [CLS]
    loss_fn = mlm_loss(mask_token_id=3, special_ids=[0, 1, 2, 3], mlm_probability=0.3,
                       generator=torch.Generator().manual_seed(0))
    history = train(tiny_model(), [{"input_ids": ids, "attention_mask": torch.ones_like(ids)}], loss_fn, steps=100,
                    lr=1e-2, progress=False)
    assert history.train_loss[0] > 2.3  # starts near ln 16: the test is not vacuous
    assert sum(history.train_loss[-10:]) / 10 < math.log(12) / 2  # MLM losses are noisy: average the last 10


def test_validation_and_restore_best():
    # Memorising 4 random sequences makes the loss on 8 others rise (measured: best at step 5, then up to 7 nats).
    model = tiny_model()
    val = [random_ids(8, 12, seed=2)]
    history = train(model, [random_ids(4, 12, seed=1)], next_token_loss, steps=30, lr=1e-2, val_batches=val,
                    eval_every=5, restore_best=True, progress=False)
    assert history.val_steps == [5, 10, 15, 20, 25, 30]
    best = min(range(6), key=history.val_loss.__getitem__)
    assert (history.best_step, history.best_val_loss) == (history.val_steps[best], history.val_loss[best])
    assert history.best_step < 30  # non-vacuity: the last weights are not the best ones
    assert evaluate(model, val, next_token_loss) == pytest.approx(history.best_val_loss, rel=1e-6)  # restored
    # eval_every that does not divide steps: the last step is validated too.
    assert train(tiny_model(), [random_ids(2, 6, 0)], next_token_loss, steps=7, val_batches=val, eval_every=3,
                 progress=False).val_steps == [3, 6, 7]


def test_validation_uses_val_loss_fn():
    calls = []

    def val_loss_fn(model, batch):
        calls.append(model.training)
        return next_token_loss(model, batch)

    history = train(tiny_model(), [random_ids(2, 6, 0)], next_token_loss, steps=4, val_batches=[random_ids(2, 6, 1)],
                    eval_every=2, val_loss_fn=val_loss_fn, progress=False)
    assert calls == [False, False]  # once per validation, in eval mode, and never for training steps
    assert len(history.val_loss) == 2


def test_callback_records_and_frame():
    peak = []

    def callback(step, model, loss):
        assert model.training and isinstance(loss, float)
        peak.append(loss)
        return {"double": 2 * step} if step % 2 == 0 else None

    history = train(tiny_model(), [random_ids(2, 6, 0)], next_token_loss, steps=4, val_batches=[random_ids(2, 6, 1)],
                    eval_every=2, callback=callback, progress=False)
    assert history.records == [{"step": 2, "double": 4}, {"step": 4, "double": 8}]
    assert peak == history.train_loss
    frame = history.to_frame()
    assert list(frame.index) == [1, 2, 3, 4] and {"train_loss", "lr", "val_loss", "double"} <= set(frame.columns)
    assert frame["val_loss"].isna().tolist() == [True, False, True, False]
    assert frame.loc[2, "val_loss"] == history.val_loss[0]


def test_frozen_parameters_stay_and_mode_is_restored():
    model = tiny_model().eval()
    model.blocks[0].attn.q_proj.weight.requires_grad_(False)
    before = model.blocks[0].attn.q_proj.weight.clone()
    seen = []
    train(model, [random_ids(2, 6, 0)], lambda m, b: (seen.append(m.training), next_token_loss(m, b))[1], steps=2,
          progress=False)
    assert seen == [True, True] and not model.training  # trains in train mode, ends in the mode it started in
    assert torch.equal(model.blocks[0].attn.q_proj.weight, before)  # frozen: not optimized, not even decayed


def test_evaluate_is_token_weighted_in_eval_mode():
    model = tiny_model()
    modes = []

    def loss_fn(m, batch):  # the mean of the batch's values, over batch.numel() "targets"
        modes.append(m.training)
        return batch["x"].float().mean(), batch["x"].numel()

    got = evaluate(model, [{"x": torch.ones(2)}, {"x": 3 * torch.ones(6)}], loss_fn)
    assert got == pytest.approx((2 * 1 + 6 * 3) / 8)  # 2.5, not the mean of means 2.0
    assert modes == [False, False] and model.training  # eval mode inside, mode restored


@pytest.mark.skipif(not torch.cuda.is_available(), reason="moves batches to a GPU")
def test_cuda_batches_and_a_cpu_mask_generator():
    model = tiny_model().cuda()
    devices = []

    def loss_fn(m, batch):
        devices.append(batch["input_ids"].device.type)
        return mlm_loss(mask_token_id=3, special_ids=[0, 1, 2, 3], generator=torch.Generator())(m, batch)

    ids = random_ids(4, 12, 0, low=4)
    history = train(model, [{"input_ids": ids, "attention_mask": torch.ones_like(ids)}], loss_fn, steps=3,
                    progress=False)
    assert devices == ["cuda"] * 3 and len(history.train_loss) == 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 0}, "steps must be an int >= 1"),
        ({"steps": 5, "schedule": "cos"}, "schedule must be one of"),
        ({"steps": 5, "warmup_steps": 6}, r"warmup_steps must be in \[0, steps=5\]"),
        ({"steps": 5, "eval_every": 2}, "need val_batches"),
        ({"steps": 5, "restore_best": True}, "need val_batches"),
        ({"steps": 5, "val_batches": [], "eval_every": 0}, "eval_every must be >= 1"),
        ({"steps": 5, "grad_clip": 0}, "grad_clip must be > 0"),
        ({"steps": 5, "lr": 0}, "lr must be > 0"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        train(tiny_model(), [random_ids(2, 6, 0)], next_token_loss, progress=False, **kwargs)


def test_bad_data_raise_clear_errors():
    with pytest.raises(ValueError, match="batches is empty"):
        train(tiny_model(), [], next_token_loss, steps=1, progress=False)
    with pytest.raises(ValueError, match="no target"):
        evaluate(tiny_model(), [], next_token_loss)
    with pytest.raises(FloatingPointError, match="step 1"):
        train(tiny_model(), [random_ids(2, 6, 0)], lambda m, b: (torch.tensor(float("nan"), requires_grad=True), 1),
              steps=1, progress=False)


# --- mixed precision (the quantization chapter): autocast_dtype, grad_scaler ----------------------------------------


def test_default_precision_path_is_bit_identical():
    # The new arguments at their defaults (None, or grad_scaler=False) must not change a single bit of training.
    batches = [random_ids(4, 10, seed=s) for s in (1, 2)]
    runs = [tiny_model() for _ in range(3)]
    train(runs[0], batches, next_token_loss, steps=4, lr=3e-3, progress=False)
    train(runs[1], batches, next_token_loss, steps=4, lr=3e-3, autocast_dtype=None, grad_scaler=None, progress=False)
    train(runs[2], batches, next_token_loss, steps=4, lr=3e-3, grad_scaler=False, progress=False)
    for (name, p), q, r in zip(runs[0].named_parameters(), runs[1].parameters(), runs[2].parameters(), strict=True):
        assert torch.equal(p, q) and torch.equal(p, r), f"{name} changed with the mixed-precision defaults"
    bf16 = tiny_model()
    train(bf16, batches, next_token_loss, steps=4, lr=3e-3, autocast_dtype=torch.bfloat16, progress=False)
    assert not torch.equal(bf16.blocks[0].mlp.fc1.weight, runs[0].blocks[0].mlp.fc1.weight)  # non-vacuity


def test_bf16_autocast_trains_with_fp32_master_weights():
    model = tiny_model()
    seen = []
    model.blocks[0].mlp.fc1.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    history = train(model, [random_ids(4, 12, seed=1)], next_token_loss, steps=30, lr=1e-2,
                    autocast_dtype=torch.bfloat16, progress=False)
    assert set(seen) == {torch.bfloat16}  # the forward really ran in bf16 ...
    assert all(p.dtype == torch.float32 for p in model.parameters())  # ... but the weights stayed fp32
    assert history.train_loss[-1] < history.train_loss[0] - 1.0  # memorising one batch: measured 2.77 -> 0.03
    assert history.skipped_steps == []  # bf16 needs no scaler, and none is made by default on the CPU


def test_grad_scaler_unscales_before_clipping():
    # Scaling by a power of 2 (GradScaler starts at 2**16) and unscaling are exact in fp32, so without autocast the
    # scaled loop must match the plain one to rounding. Clipping the still-scaled gradients (unscale_ forgotten)
    # would shrink every update by ~2**16: the weights would barely move and this comparison would fail.
    batches = [random_ids(4, 10, seed=s) for s in (1, 2)]
    plain, scaled = tiny_model(), tiny_model()
    train(plain, batches, next_token_loss, steps=4, lr=3e-3, grad_clip=0.05, progress=False)
    history = train(scaled, batches, next_token_loss, steps=4, lr=3e-3, grad_clip=0.05, grad_scaler=True,
                    progress=False)
    for (name, p), q in zip(plain.named_parameters(), scaled.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=f"{name}: the scaled update differs")
    assert history.skipped_steps == []


def test_fp16_autocast_with_grad_scaler_trains_on_cpu():
    model = tiny_model()
    history = train(model, [random_ids(4, 12, seed=1)], next_token_loss, steps=30, lr=1e-2,
                    autocast_dtype=torch.float16, grad_scaler=True, progress=False)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert history.train_loss[-1] < history.train_loss[0] - 1.0  # measured 2.77 -> 0.03


def test_grad_scaler_skips_an_update_with_inf_gradients():
    # A fake overflow at step 2 (the loss times inf: every gradient is inf or NaN). With a scaler the update is
    # skipped, the weights stay, the scale is lowered and the step recorded; without one the loop must raise.
    calls = []

    def overflowing_loss(model, batch):
        calls.append(1)
        loss, n = next_token_loss(model, batch)
        return (loss * float("inf") if len(calls) == 2 else loss), n

    weights = []
    model = tiny_model()
    history = train(model, [random_ids(2, 8, 0)], overflowing_loss, steps=3, grad_scaler=True, progress=False,
                    callback=lambda step, m, loss: weights.append(m.blocks[0].mlp.fc1.weight.detach().clone()))
    assert history.skipped_steps == [2]
    assert torch.equal(weights[1], weights[0])  # the skipped update left the weights as they were
    assert not torch.equal(weights[2], weights[1])  # the next one trained again
    assert all(torch.isfinite(p).all() for p in model.parameters())
    calls.clear()
    with pytest.raises(FloatingPointError, match="step 2"):
        train(tiny_model(), [random_ids(2, 8, 0)], overflowing_loss, steps=3, progress=False)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"autocast_dtype": torch.float32}, ValueError, "autocast_dtype must be one of"),
        ({"autocast_dtype": torch.int8}, ValueError, "autocast_dtype must be one of"),
        ({"autocast_dtype": "bf16"}, TypeError, "autocast_dtype must be a torch dtype"),
        ({"grad_scaler": "yes"}, TypeError, "grad_scaler must be True, False or None"),
    ],
)
def test_bad_precision_arguments_raise_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        train(tiny_model(), [random_ids(2, 6, 0)], next_token_loss, steps=2, progress=False, **kwargs)
