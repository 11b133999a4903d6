"""lab_utils.memory: the calculator is exact against real torch.optim optimizers; activations against autograd."""

import copy
import weakref

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForCausalLM

from lab_utils import memory
from lab_utils.memory.calculator import SHARDING_STAGES, shard_numel
from lab_utils.objectives import model_loss

B, S = 2, 16  # batch and sequence length of the tiny models' batches
ACT = dict(hidden_size=32, n_heads=4, intermediate_size=64)  # the tiny models' sizes, for activation_bytes


def tiny_bert(n_layers: int = 2, attn: str = "eager", **kw) -> BertForSequenceClassification:
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=n_layers, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, num_labels=3, attn_implementation=attn, **kw)
    torch.manual_seed(0)
    return BertForSequenceClassification(config).train()


def tiny_llama(n_layers: int = 2, attn: str = "eager") -> LlamaForCausalLM:
    config = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=n_layers,
                         num_attention_heads=4, num_key_value_heads=2, attn_implementation=attn)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).train()


def bert_batch() -> dict:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 100, (B, S), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([0, 2])}


def saved_bytes(model: nn.Module, batch: dict) -> int:
    with memory.saved_tensor_bytes(model) as saved:
        model_loss(model, batch)
    return saved.bytes


# ------------------------------------------------------------------------------------------------ calculator
def test_bytes_per_element():
    assert memory.bytes_per_element(torch.float32) == 4 == memory.bytes_per_element("fp32")
    assert memory.bytes_per_element("bf16") == 2 == memory.bytes_per_element(torch.float16)
    assert memory.bytes_per_element("int8") == 1 == memory.bytes_per_element(torch.uint8)
    for bad in ("fp33", torch.bool, torch.complex64, 4):
        with pytest.raises(ValueError, match="dtype"):
            memory.bytes_per_element(bad)


def test_lecture_rule_sgd_momentum_adam():
    n = 110_000_000  # the lecture's BERT-base: 4 bytes per fp32 copy
    est = {opt: memory.estimate_training_memory(n, optimizer=opt) for opt in memory.OPTIMIZERS}
    for opt, e in est.items():
        assert (e.weights, e.gradients, e.activations) == (4 * n, 4 * n, 0)
        assert e.optimizer_state == 4 * n * memory.STATE_COPIES[opt]
    assert [est[o].total // (4 * n) for o in memory.OPTIMIZERS] == [2, 3, 4, 4]  # weights x2, x3 (momentum), x4
    assert est["adam"].to_dict()["total"] == pytest.approx(16 * n / 2**20)
    assert est["adam"].to_dict("B") == {"weights": 4 * n, "gradients": 4 * n, "optimizer_state": 8 * n,
                                        "activations": 0, "total": 16 * n}


def test_trainable_subset_dtypes_and_activations():
    e = memory.estimate_training_memory(1000, n_trainable=10, optimizer="momentum", dtype="bf16", activations=7)
    assert (e.weights, e.gradients, e.optimizer_state, e.activations, e.total) == (2000, 20, 40, 7, 2067)
    e = memory.estimate_training_memory(1000, n_trainable=10, dtype=torch.bfloat16, state_dtype=torch.bfloat16)
    assert e.optimizer_state == 2 * 10 * 2
    assert memory.estimate_training_memory(110e6, optimizer="Adam").weights == 440_000_000  # 110e6 and "Adam" are fine


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(n_params=-1), ValueError, "n_params must be >= 0"),
    (dict(n_params=10, n_trainable=-3), ValueError, "n_trainable must be >= 0"),
    (dict(n_params=10, n_trainable=11), ValueError, "cannot exceed"),
    (dict(n_params=10, optimizer="rmsprop"), ValueError, r"unknown optimizer 'rmsprop'.*'sgd', 'momentum'"),
    (dict(n_params=10, dtype="fp7"), ValueError, "unknown dtype"),
    (dict(n_params=10, state_dtype=torch.bool), ValueError, "numeric torch dtype"),
    (dict(n_params=10.5), TypeError, "integer"),
    (dict(n_params=True), TypeError, "integer"),
    (dict(n_params=10, activations=-1), ValueError, "activations must be >= 0"),
])
def test_estimate_rejects_bad_inputs(kwargs, error, match):
    with pytest.raises(error, match=match):
        memory.estimate_training_memory(**kwargs)


def test_count_parameters_tied_once_and_trainable():
    emb = nn.Embedding(10, 4)
    model = nn.Sequential(emb, nn.Linear(4, 10, bias=False))
    model[1].weight = emb.weight  # tied, as an LM head: (10, 4)
    assert memory.count_parameters(model) == 40 == memory.parameter_bytes(model) // 4
    model.append(nn.Linear(10, 2))
    model[2].requires_grad_(False)
    assert memory.count_parameters(model) == 62 and memory.count_parameters(model, trainable_only=True) == 40
    with pytest.raises(TypeError, match="nn.Module"):
        memory.count_parameters("bert")


OPTIMIZER_FACTORIES = {
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.1),
    "momentum": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
    "adam": lambda ps: torch.optim.Adam(ps, lr=1e-3),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=1e-3),
}


@pytest.mark.parametrize("optimizer", memory.OPTIMIZERS)
def test_calculator_exact_vs_real_optimizer(optimizer):
    bert = tiny_bert()
    bert.bert.embeddings.requires_grad_(False)  # frozen: stored, but no gradient and no state
    trainable = [p for p in bert.parameters() if p.requires_grad]
    opt = OPTIMIZER_FACTORIES[optimizer](trainable)
    est = memory.estimate_model_training_memory(bert, optimizer=optimizer)
    measured = memory.measure_training_step(bert, bert_batch(), model_loss, opt)
    assert (measured["weights"], measured["gradients"], measured["optimizer_state"]) == (
        est.weights, est.gradients, est.optimizer_state)
    # non-vacuous: the frozen embeddings are a real share, and the state is what the lecture says
    n_all, n_train = memory.count_parameters(bert), memory.count_parameters(bert, trainable_only=True)
    assert 0 < n_train < n_all and est.weights == 4 * n_all and est.gradients == 4 * n_train
    assert est.optimizer_state == 4 * n_train * memory.STATE_COPIES[optimizer]
    assert est == memory.estimate_training_memory(n_all, n_trainable=n_train, optimizer=optimizer)
    assert measured["peak"] is None and measured["activations"] > 0  # CPU: no allocator statistics
    # Adam's per-tensor `step` counters: 0-dim fp32, excluded by default, exactly 4 bytes per trainable tensor
    scalars = memory.optimizer_state_bytes(opt, include_scalars=True) - measured["optimizer_state"]
    assert scalars == (4 * len(trainable) if optimizer.startswith("adam") else 0)


def test_sgd_without_momentum_holds_no_state_and_bf16_state_follows_params():
    mlp = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.SGD(mlp.parameters(), lr=0.1, momentum=0.0)  # momentum=0 is plain SGD: no buffer
    mlp(torch.randn(4, 8)).sum().backward()
    opt.step()
    assert memory.optimizer_state_bytes(opt) == 0 == memory.estimate_model_training_memory(mlp, optimizer="sgd")\
        .optimizer_state
    mlp = mlp.to(torch.bfloat16)
    opt = torch.optim.Adam(mlp.parameters())
    step = memory.measure_training_step(mlp, torch.randn(4, 8), lambda m, x: m(x.bfloat16()).float().sum(), opt)
    est = memory.estimate_model_training_memory(mlp, optimizer="adam")
    assert step["optimizer_state"] == est.optimizer_state == 2 * 2 * memory.count_parameters(mlp)
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        memory.optimizer_state_bytes("adam")


def test_gradient_bytes_counts_existing_grads_only():
    mlp = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 2))
    assert memory.gradient_bytes(mlp) == 0
    mlp[0].requires_grad_(False)
    mlp(torch.randn(3, 8)).sum().backward()
    assert memory.gradient_bytes(mlp) == 4 * (16 * 2 + 2)


# ------------------------------------------------------------------------------------------------ saved tensors
def test_saved_tensor_bytes_tiny_mlp_by_hand():
    n, d_in, d_hid, d_out = 5, 3, 7, 2
    mlp = nn.Sequential(nn.Linear(d_in, d_hid), nn.ReLU(), nn.Linear(d_hid, d_out))
    x = torch.randn(n, d_in)
    with memory.saved_tensor_bytes() as saved:
        loss = mlp(x).sum()
    # Linear 1 saves x (for its weight's gradient; x needs none, so its weight is not saved); ReLU saves its output,
    # which Linear 2 saves again as its input (one storage, counted once); Linear 2 saves its weight (a parameter).
    assert saved.bytes == 4 * n * (d_in + d_hid) and saved.count == 2
    assert saved.parameter_bytes == 4 * d_hid * d_out
    loss.backward()  # the hooks returned the tensors unchanged: backward still works
    assert mlp[0].weight.grad is not None


def test_saved_tensor_bytes_keeps_gradients_and_frees_the_graph():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.LayerNorm(8), nn.Linear(8, 2))
    x = torch.randn(3, 4, requires_grad=True)
    torch.relu(mlp(x)).pow(2).sum().backward()
    expected = [p.grad.clone() for p in mlp.parameters()] + [x.grad.clone()]
    mlp.zero_grad()
    x.grad = None
    with memory.saved_tensor_bytes(mlp) as saved:
        hidden = torch.relu(mlp(x))
    hidden.pow(2).sum().backward()
    got = [p.grad for p in mlp.parameters()] + [x.grad]
    assert saved.bytes > 0 and all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))
    # a forward pass measured without backward must not keep its graph alive (no reference cycle through the hooks)
    with memory.saved_tensor_bytes(mlp):
        hidden = torch.relu(mlp(x))
    ref = weakref.ref(hidden)
    del hidden
    assert ref() is None


def test_saved_tensor_bytes_views_once():
    w = torch.randn(6, requires_grad=True)
    x = torch.randn(4, 6)
    with memory.saved_tensor_bytes() as saved:
        (x * w).sum() + (x.view(24)[6:12] * w).sum()  # x saved twice: as itself and as a view
    assert saved.bytes == x.nbytes and saved.count == 1


def test_activation_formula_is_korthikanti_in_16_bit():
    b, s, h, a = 4, 128, 256, 8  # Korthikanti et al. 2022, eq. 1: s*b*h*(34 + 5*a*s/h) per layer, 16-bit, i = 4h
    got = memory.activation_bytes(batch_size=b, seq_len=s, hidden_size=h, n_layers=1, n_heads=a,
                                  intermediate_size=4 * h, dtype=torch.bfloat16, device="cuda")
    assert got == s * b * h * (34 + 5 * a * s // h) + 16 * s * b  # + LayerNorm mean/rstd in fp32, which eq. 1 omits


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_activation_bytes_exact_per_layer_bert(attn):
    # Differences of whole models isolate the layers: embeddings, pooler, classifier and loss cancel out.
    batch = bert_batch()
    one, three = saved_bytes(tiny_bert(1, attn), batch), saved_bytes(tiny_bert(3, attn), batch)
    # on a CPU, BERT in training (attention dropout) runs SDPA's math path: the same tensors as eager
    est = memory.activation_bytes(batch_size=B, seq_len=S, n_layers=2, **ACT, device="cpu")
    assert three - one == est
    # The whole model also saves the embeddings' LayerNorm input and dropout mask (2 x 4*T*h), the token ids,
    # pooler and classifier (a few T*h): with 3 layers of ~80 T*h that is within 10% of the layers' estimate.
    total = memory.activation_bytes(batch_size=B, seq_len=S, n_layers=3, **ACT, device="cpu")
    assert total < three <= 1.10 * total
    # without dropout, SDPA runs a fused kernel on a CPU too: no s x s matrix; the config's default knows it
    no_dropout = tiny_bert(1, attn, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    est_one = memory.activation_bytes_for(no_dropout.config, batch_size=B, seq_len=S, device="cpu")
    assert est_one == memory.activation_bytes(batch_size=B, seq_len=S, n_layers=1, **ACT, attention=attn,
                                              dropout=False, device="cpu")
    assert saved_bytes(tiny_bert(2, attn, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0), batch) \
        - saved_bytes(no_dropout, batch) == est_one


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_activation_bytes_exact_llama_with_lm_head(attn):
    ids = torch.randint(0, 100, (B, S), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "labels": ids}
    one, three = saved_bytes(tiny_llama(1, attn), batch), saved_bytes(tiny_llama(3, attn), batch)
    kw = dict(batch_size=B, seq_len=S, **ACT, architecture="llama", attention=attn, n_kv_heads=2, device="cpu")
    assert three - one == memory.activation_bytes(n_layers=2, **kw)
    # with the LM head's fp32 log-softmax (4*T*V) only the final RMSNorm and the ids/labels/RoPE tables are left out
    est = memory.activation_bytes_for(tiny_llama(3, attn).config, batch_size=B, seq_len=S, device="cpu")
    assert est == memory.activation_bytes(n_layers=3, vocab_size=100, **kw)
    assert est < three <= 1.10 * est


def test_checkpointing_reduces_activations():
    kw = dict(batch_size=8, seq_len=128, n_layers=12, hidden_size=768, n_heads=12, intermediate_size=3072)
    full, ckpt = memory.activation_bytes(**kw), memory.activation_bytes(**kw, checkpointing=True)
    one = memory.activation_bytes(**{**kw, "n_layers": 1})
    assert ckpt == 12 * 4 * 8 * 128 * 768 + one and ckpt < full / 5
    bert = tiny_bert(3)
    before = saved_bytes(bert, bert_batch())
    # transformers 5.24 renamed it activation_checkpointing_enable (the old name warns); 5.17 may lack the new one
    getattr(bert, "activation_checkpointing_enable", bert.gradient_checkpointing_enable)()
    after = saved_bytes(bert, bert_batch())
    # During the forward pass a checkpointed layer saves only its input: the layers' bytes drop to L*e*T*h, exactly
    # the estimate without the one layer that backward recomputes later.
    kw = dict(batch_size=B, seq_len=S, n_layers=3, **ACT, device="cpu")
    layers, ckpt_layers = memory.activation_bytes(**kw), memory.activation_bytes(**kw, checkpointing=True)
    one_layer = memory.activation_bytes(**{**kw, "n_layers": 1})
    assert after == before - layers + ckpt_layers - one_layer and after < before / 5
    model_loss(bert, bert_batch())[0].backward()  # and backward still recomputes and works under the hooks


@pytest.mark.parametrize("kwargs, match", [
    (dict(architecture="gpt"), "unknown architecture"),
    (dict(attention="flash"), "unknown attention"),
    (dict(n_heads=5), "divisible"),
    (dict(seq_len=-1), "seq_len must be >= 0"),
    (dict(architecture="llama", dropout=True), "no dropout"),
])
def test_activation_bytes_rejects_bad_inputs(kwargs, match):
    base = dict(batch_size=2, seq_len=8, n_layers=2, **ACT)
    with pytest.raises(ValueError, match=match):
        memory.activation_bytes(**{**base, **kwargs})


# ------------------------------------------------------------------------------------------------ peak memory
def test_peak_memory_is_none_on_cpu():
    with memory.peak_memory("cpu") as peak:
        torch.ones(1000)
    assert peak.bytes is None and peak.peak is None and peak.baseline is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (runs on the GPU machine)")
def test_peak_memory_cuda_sees_an_allocation():
    with memory.peak_memory("cuda") as peak:
        x = torch.empty(2**20, device="cuda")  # 4 MiB
        del x
    assert peak.bytes >= 4 * 2**20 and peak.peak >= peak.baseline + peak.bytes
    bert = tiny_bert().cuda()
    step = memory.measure_training_step(bert, bert_batch(), model_loss, torch.optim.Adam(bert.parameters()),
                                        phases=True)
    est = memory.estimate_model_training_memory(bert, optimizer="adam")
    assert step["peak"] == max(step["peak_forward"], step["peak_backward"], step["peak_step"])
    assert step["peak_step"] >= est.weights + est.gradients + est.optimizer_state
    assert step["peak_forward"] >= est.weights + step["activations"]


def test_measure_training_step_copies_nothing_and_validates():
    bert = tiny_bert()
    weights = copy.deepcopy(bert.state_dict())
    step = memory.measure_training_step(bert, bert_batch(), model_loss, torch.optim.SGD(bert.parameters(), lr=1.0))
    assert set(step) == {"weights", "gradients", "optimizer_state", "activations", "peak"}
    step = memory.measure_training_step(bert, bert_batch(), model_loss, torch.optim.SGD(bert.parameters(), lr=1.0),
                                        phases=True)
    assert step["peak"] is step["peak_forward"] is step["peak_step"] is None and step["gradients"] > 0
    assert not torch.equal(weights["classifier.weight"], bert.state_dict()["classifier.weight"])  # a real step
    with pytest.raises(TypeError, match="scalar loss"):
        memory.measure_training_step(bert, bert_batch(), lambda m, b: m(**b).logits, torch.optim.SGD(
            bert.parameters(), lr=1.0))
    with pytest.raises(ValueError, match="unknown unit"):
        memory.to_unit(1, "MO")


def test_count_parameters_counts_packed_4bit_weights_as_weights():
    import bitsandbytes as bnb

    layer = bnb.nn.Linear4bit(64, 32, bias=True, quant_type="nf4", compute_dtype=torch.float32)
    layer.weight = bnb.nn.Params4bit(torch.randn(32, 64), requires_grad=False, quant_type="nf4")
    layer = layer.to("cpu")  # quantizes: the weight is now a uint8 tensor of 64 * 32 / 2 bytes
    assert layer.weight.dtype == torch.uint8 and layer.weight.numel() == 64 * 32 // 2
    assert memory.count_parameters(layer) == 64 * 32 + 32  # the weights it holds, and the bias
    assert memory.count_parameters(layer, trainable_only=True) == 32  # the bias
    estimate = memory.estimate_model_training_memory(layer)
    assert estimate.weights == 64 * 32 // 2 + 32 * 4  # bytes as stored: packed 4-bit weight + fp32 bias


# ------------------------------------------------------------------------ world size and ZeRO sharding stages
def test_world_size_one_and_none_change_nothing():
    base = memory.estimate_training_memory(1001, n_trainable=501, optimizer="adamw", activations=9)
    for stage in SHARDING_STAGES:
        assert memory.estimate_training_memory(1001, n_trainable=501, optimizer="adamw", activations=9,
                                               world_size=1, sharding=stage) == base
    for world in (2, 3, 8):  # DDP: every rank holds a full copy of everything
        assert memory.estimate_training_memory(1001, n_trainable=501, optimizer="adamw", activations=9,
                                               world_size=world) == base


@pytest.mark.parametrize("world", [2, 3, 4, 8])
def test_stages_shard_state_then_gradients_then_weights(world):
    n = 1_000_003  # prime: no world size divides it, so ceil matters
    full = memory.estimate_training_memory(n, optimizer="adamw")
    piece = -(-n // world)  # ceil(n / world): the largest of the world pieces
    est = {s: memory.estimate_training_memory(n, optimizer="adamw", world_size=world, sharding=s)
           for s in SHARDING_STAGES}
    assert (est["zero1"].weights, est["zero1"].gradients, est["zero1"].optimizer_state) == (
        full.weights, full.gradients, 8 * piece)
    assert (est["zero2"].weights, est["zero2"].gradients, est["zero2"].optimizer_state) == (
        full.weights, 4 * piece, 8 * piece)
    assert (est["zero3"].weights, est["zero3"].gradients, est["zero3"].optimizer_state) == (
        4 * piece, 4 * piece, 8 * piece)
    assert 4 * piece * world >= 4 * n > 4 * (piece - 1) * world  # the pieces cover n, one element of slack at most
    assert est["none"].total > est["zero1"].total > est["zero2"].total > est["zero3"].total


def test_sharding_trainable_subset_bf16_and_activations_not_divided():
    e = memory.estimate_training_memory(1000, n_trainable=10, dtype="bf16", activations=7, world_size=4,
                                        sharding="zero3")
    assert (e.weights, e.gradients, e.optimizer_state, e.activations) == (2 * 250, 2 * 3, 4 * 2 * 3, 7)
    assert memory.estimate_training_memory(10, world_size=16, sharding="zero3").weights == 4  # one element each


def test_shard_numel_is_torch_chunk():
    for numel in (0, 1, 5, 7, 12, 49_152):
        for world in (1, 2, 3, 4, 5, 8):
            chunks = torch.arange(numel).chunk(world) if numel else ()
            sizes = [c.numel() for c in chunks] + [0] * (world - len(chunks))
            assert [shard_numel(numel, world, r) for r in range(world)] == sizes, (numel, world)


def test_model_estimate_shards_each_tensor_by_rows_as_fsdp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Linear(7, 3), nn.LayerNorm(3))  # odd first dims: uneven shards
    model[2].requires_grad_(False)
    params = list(model.parameters())
    for world in (1, 2, 3):
        for rank in range(world):
            def rows(p, w=world, r=rank):  # what FSDP2 keeps of p on rank r: its torch.chunk along dim 0
                chunks = p.detach().chunk(w)
                return chunks[r].numel() if r < len(chunks) else 0

            est = memory.estimate_model_training_memory(model, optimizer="adamw", world_size=world,
                                                        sharding="zero3", rank=rank)
            assert est.weights == 4 * sum(rows(p) for p in params)
            assert est.gradients == 4 * sum(rows(p) for p in params if p.requires_grad)
            assert est.optimizer_state == 2 * est.gradients
            zero1 = memory.estimate_model_training_memory(model, optimizer="adamw", world_size=world,
                                                          sharding="zero1", rank=rank)
            assert zero1.weights == 4 * sum(p.numel() for p in params) and zero1.optimizer_state == est.optimizer_state
    total = sum(memory.estimate_model_training_memory(model, world_size=3, sharding="zero3", rank=r).weights
                for r in range(3))
    assert total == memory.parameter_bytes(model)  # the shards add up to the model, nothing lost or doubled


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(world_size=0), ValueError, "world_size must be >= 1"),
    (dict(world_size=-2, sharding="zero3"), ValueError, "world_size must be >= 1"),
    (dict(world_size=2.0), TypeError, "world_size must be an int"),
    (dict(world_size=True), TypeError, "world_size must be an int"),
    (dict(world_size=2, sharding="fsdp"), ValueError, r"unknown sharding 'fsdp'.*'none', 'zero1'"),
    (dict(world_size=2, sharding=3), ValueError, "unknown sharding"),
])
def test_sharding_rejects_bad_inputs(kwargs, error, match):
    with pytest.raises(error, match=match):
        memory.estimate_training_memory(100, **kwargs)
    with pytest.raises(error, match=match):
        memory.estimate_model_training_memory(nn.Linear(2, 2), **kwargs)


def test_shard_numel_rejects_bad_rank():
    for rank in (-1, 2, 1.0):
        with pytest.raises(ValueError, match="rank must be an int in"):
            shard_numel(10, 2, rank)
