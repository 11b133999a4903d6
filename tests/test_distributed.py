"""lab_utils.distributed: real 2-process runs (CPU, gloo) against the memory calculator and a 1-process run."""

import json
import os
import socket
import subprocess

import pytest
import torch

from lab_utils import distributed, memory
from lab_utils.distributed import launcher
from lab_utils.distributed.train import TINY, VOCAB_SIZE, build_model, lm_blocks, main
from lab_utils.memory import estimate_model_training_memory, estimate_training_memory

STEPS, BATCH, SEQ = 3, 4, 16  # global batch 4: 2 sequences per rank
# 1 vs 2 processes compute the same mean gradient with the rows summed in another order: float32 rounding only.
# After 3 AdamW steps with lr 1e-3 the weights agree to ~1e-7; 1e-5 leaves room and still catches a wrong average
# (a sum instead of a mean changes the first update of every weight by ~lr = 1e-3).
ATOL = 1e-5


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    common = dict(model="tiny", data="random", global_batch=BATCH, seq_len=SEQ, steps=STEPS, lr=1e-3, timeout=300)
    two = distributed.run_training(nproc=2, engines=("ddp", "zero1", "zero2", "zero3"),
                                   save_weights=tmp / "two.pt", **common)
    one = _one_process(tmp, common)
    return one, two, torch.load(tmp / "one.pt"), torch.load(tmp / "two.pt")


def _one_process(tmp, common):
    """The same script with world size 1, run in this process (a second torchrun would double the test's time)."""
    with socket.socket() as s:  # a free loopback port for the 1-process rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        main(["--out", str(tmp / "one.json"), "--engines", "ddp", "--save-weights", str(tmp / "one.pt"),
              *[f"--{k.replace('_', '-')}={v}" for k, v in common.items() if k != "timeout"]])
    finally:
        for k, v in saved.items():
            if v is None:
                del os.environ[k]
            else:
                os.environ[k] = v
    return json.loads((tmp / "one.json").read_text())


def _held(record):
    return record["weights"], record["gradients"], record["optimizer_state"]


def test_runs_report_what_they_ran(runs):
    one, two, *_ = runs
    assert (one["world_size"], two["world_size"], two["backend"], two["device"]) == (1, 2, "gloo", "cpu")
    assert two["n_params"] == sum(p.numel() for p in build_model("tiny").parameters())
    assert list(two["engines"]) == ["ddp", "zero1", "zero2", "zero3"]
    for result in two["engines"].values():
        assert [r["rank"] for r in result["ranks"]] == [0, 1] and len(result["losses"]) == STEPS


def test_calculator_exact_for_every_stage_on_every_rank(runs):
    _, two, *_ = runs
    n = two["n_params"]

    def calc(stage):
        return estimate_training_memory(n, optimizer="adamw", world_size=2, sharding=stage)

    for rank in (0, 1):
        ddp, zero1, zero2, zero3 = (two["engines"][e]["ranks"][rank] for e in ("ddp", "zero1", "zero2", "zero3"))
        est = calc("none")
        assert _held(ddp) == (est.weights, est.gradients, est.optimizer_state) and ddp["gathered"] == 0
        # FSDP2 keeps only its shard of everything at rest; ZeRO-2's full weights are the copy gathered from the
        # forward pass through the backward pass (ZeRO-3 frees each layer's copy after use).
        est = calc("zero2")
        assert (zero2["gathered"], zero2["gradients"], zero2["optimizer_state"]) == (
            est.weights, est.gradients, est.optimizer_state)
        est = calc("zero3")
        assert _held(zero3) == (est.weights, est.gradients, est.optimizer_state)
        assert zero2["weights"] == est.weights and zero3["gathered"] < est.weights
        # per tensor along dim 0, as FSDP2 splits: the same here, as every first dimension is even
        model_est = estimate_model_training_memory(build_model("tiny"), optimizer="adamw", world_size=2,
                                                   sharding="zero3", rank=rank)
        assert _held(zero3) == (model_est.weights, model_est.gradients, model_est.optimizer_state)
        # ZeRO-1: weights and gradients whole, as DDP
        assert _held(zero1)[:2] == _held(ddp)[:2]
    # non-vacuous: sharding halved something real
    assert two["engines"]["zero3"]["ranks"][0]["weights"] * 2 == two["engines"]["ddp"]["ranks"][0]["weights"]


def test_zero1_partitions_whole_tensors(runs):
    # ZeroRedundancyOptimizer gives each rank whole parameter tensors: the states add up to the full state, but
    # the 49,152 x 64 embedding (shared with the output layer) cannot be split: one rank holds far more than half.
    _, two, *_ = runs
    states = [r["optimizer_state"] for r in two["engines"]["zero1"]["ranks"]]
    full = estimate_training_memory(two["n_params"], optimizer="adamw")
    assert sum(states) == full.optimizer_state
    embedding_state = 2 * 4 * VOCAB_SIZE * TINY["hidden_size"]
    assert max(states) >= embedding_state > full.optimizer_state / 2


def test_ddp_equals_one_process_with_the_same_global_batch(runs):
    one, two, w_one, w_two = runs
    assert w_one.keys() == w_two.keys()
    first = next(iter(w_one))
    assert not torch.equal(w_one[first], build_model("tiny").state_dict()[first])  # training moved the weights
    for name in w_one:
        torch.testing.assert_close(w_two[name], w_one[name], atol=ATOL, rtol=0, msg=name)
    losses = {e: r["losses"] for e, r in two["engines"].items()}
    for engine, curve in losses.items():  # every engine is exact data parallelism: the same losses
        torch.testing.assert_close(torch.tensor(curve), torch.tensor(one["engines"]["ddp"]["losses"]),
                                   atol=1e-5, rtol=0, msg=engine)


def test_lm_blocks_and_models():
    blocks = lm_blocks(3, 8, data="random", seed=1)
    assert blocks.shape == (3, 8) and blocks.dtype == torch.int64 and int(blocks.max()) < VOCAB_SIZE
    assert torch.equal(blocks, lm_blocks(3, 8, data="random", seed=1))
    for kwargs, match in [(dict(n_blocks=0, seq_len=8), "n_blocks"), (dict(n_blocks=2, seq_len=1), "seq_len"),
                          (dict(n_blocks=2, seq_len=8, data="wiki"), "unknown data")]:
        with pytest.raises(ValueError, match=match):
            lm_blocks(**kwargs)
    with pytest.raises(ValueError, match="unknown model"):
        build_model("gpt2")


def test_communication_bytes():
    n = 1000
    assert distributed.communication_bytes(n, 1, "ddp") == 0  # alone: nothing to send
    assert distributed.communication_bytes(n, 2, "ddp") == 4000  # all-reduce: 2 x (W-1)/W x 4n
    assert distributed.communication_bytes(n, 4, "zero3", "bf16") == 3 * 3 * 2 * n // 4
    assert distributed.communication_bytes(n, 2, "local") == 0
    with pytest.raises(ValueError, match="unknown engine 'fsdp'"):
        distributed.communication_bytes(n, 2, "fsdp")
    with pytest.raises(ValueError, match="world_size must be >= 1"):
        distributed.communication_bytes(n, 0, "ddp")


def test_launch_sets_the_child_environment(monkeypatch):
    seen = {}

    def fake_run(command, env, **kwargs):
        seen.update(command=command, env=env)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(launcher.subprocess, "run", fake_run)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    distributed.launch("some.module", ["--x", "1"], nproc=3)
    assert seen["command"][1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=3", "-m",
                                   "some.module", "--x", "1"]
    for key, value in {**distributed.CHILD_ENV, "OMP_NUM_THREADS": "1"}.items():
        assert seen["env"][key] == value
    assert distributed.CHILD_ENV == {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
                                     "NVSHMEM_DISABLE_NVLS": "1"}


def test_launch_failure_names_the_module(monkeypatch):
    monkeypatch.setattr(launcher.subprocess, "run",
                        lambda command, **kw: subprocess.CompletedProcess(command, 1, "", "boom on rank 1"))
    with pytest.raises(RuntimeError, match=r"(?s)some.module failed on 2 ranks.*boom on rank 1"):
        distributed.launch("some.module", [], nproc=2)
    with pytest.raises(ValueError, match="nproc must be >= 1"):
        distributed.launch("some.module", [], nproc=0)


def test_plan_falls_back_to_cpu_processes(monkeypatch):
    assert distributed.plan("cpu", 2) == ("cpu", 2)
    monkeypatch.setattr(launcher, "gpu_count", lambda: 1)  # Colab: one GPU
    assert distributed.plan("cuda", 2) == ("cpu", 2)
    monkeypatch.setattr(launcher, "gpu_count", lambda: 2)
    assert distributed.plan("cuda", 2) == ("cuda", 2) and distributed.plan("cpu", 2) == ("cpu", 2)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="wanted must be an int >= 1"):
            distributed.plan("cpu", bad)


def test_wrap_rejects_unknown_engine():
    with pytest.raises(ValueError, match="unknown engine 'deepspeed'"):
        distributed.wrap(torch.nn.Linear(2, 2), "deepspeed")


def test_held_bytes_without_an_engine_match_lab_utils_memory():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Linear(6, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    assert distributed.gathered_parameter_bytes(model) == 0  # nothing is sharded, nothing gathered
    assert distributed.held_gradient_bytes(model) == 0  # no backward yet
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    n = sum(p.numel() for p in model.parameters())
    assert distributed.held_parameter_bytes(model) == memory.parameter_bytes(model) == 4 * n
    assert distributed.held_gradient_bytes(model) == memory.gradient_bytes(model) == 4 * n
    assert distributed.held_optimizer_state_bytes(opt) == memory.optimizer_state_bytes(opt) == 8 * n
    assert distributed.local_nbytes(torch.zeros(3, 5, dtype=torch.bfloat16)) == 30


def test_lora_under_ddp_communicates_and_stores_the_adapters_only():
    # Only LoRA trains: DDP registers, all-reduces and the optimizer keeps state for the adapters alone.
    r = 4
    result = distributed.run_training(nproc=2, engines=("ddp",), model="tiny", data="random", global_batch=4,
                                      seq_len=8, steps=2, lr=1e-3, lora_rank=r, timeout=300)
    head_dim = TINY["hidden_size"] // TINY["num_attention_heads"]
    q = r * (TINY["hidden_size"] + TINY["hidden_size"])  # A: r x d_in, B: d_out x r
    v = r * (TINY["hidden_size"] + TINY["num_key_value_heads"] * head_dim)
    n_trainable = TINY["num_hidden_layers"] * (q + v)
    assert result["n_trainable"] == n_trainable and result["lora_rank"] == r
    assert result["n_params"] == sum(p.numel() for p in build_model("tiny").parameters()) + n_trainable
    for rank in result["engines"]["ddp"]["ranks"]:
        assert rank["gradients"] == 4 * n_trainable  # float32 gradients of the adapters only
        assert rank["optimizer_state"] == 8 * n_trainable  # AdamW's two moments of the adapters only
    assert distributed.communication_bytes(n_trainable, 2, "ddp") == 4 * n_trainable  # 2 x 1/2 x 4 bytes


def test_lora_runs_refuse_sharding_engines():
    from lab_utils.distributed.train import _parse

    with pytest.raises(SystemExit):
        _parse(["--out", "x.json", "--engines", "zero2", "--lora-rank", "4"])
    with pytest.raises(SystemExit):
        _parse(["--out", "x.json", "--lora-rank", "-1"])
    assert _parse(["--out", "x.json", "--engines", "local,ddp", "--lora-rank", "4"]).lora_rank == 4
