"""The chapter's training script: the same causal-LM fine-tuning under each data-parallel engine, measured per rank.

Run by a launcher on every rank (``python -m torch.distributed.run --nproc_per_node 2 -m lab_utils.distributed.train
--out results.json``; :func:`lab_utils.distributed.run_training` does it): AdamW full fine-tuning of SmolLM2 (or a
tiny randomly initialised model of the same Llama architecture) on tweets packed into fixed-length blocks, one global
batch per step split evenly across the ranks, so every rank sees the same number of tokens and DDP's average of the
ranks' mean losses is the mean loss of the global batch. For each engine it records, on every rank: the bytes of
weights, gathered weights, gradients and optimizer state after the first step, the CUDA peak, and the median time of
a step; rank 0 writes them as JSON. Chapter "When one GPU is not enough".
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import statistics
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn

from lab_utils.decoding import synchronize
from lab_utils.distributed.engines import (
    ENGINES,
    gathered_parameter_bytes,
    held_gradient_bytes,
    held_optimizer_state_bytes,
    held_parameter_bytes,
    wrap,
)
from lab_utils.lora import inject_lora
from lab_utils.profile import GPU_MEMORY_CAP_GIB

__all__ = ["DATA", "MODELS", "VOCAB_SIZE", "build_model", "lm_blocks", "main", "run_engine"]

MODELS = ("tiny", "smollm2")
DATA = ("tweets", "random")
VOCAB_SIZE = 49_152  # SmolLM2's vocabulary (len of its tokenizer)
# The tiny model: SmolLM2's architecture and vocabulary (tied embeddings, grouped-query attention), shrunk; every
# first dimension is even, so a 2-way FSDP split is exact.
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


def lm_blocks(n_blocks: int, seq_len: int, *, seed: int = 0, data: str = "tweets") -> Tensor:
    """``n_blocks`` rows of ``seq_len`` SmolLM2 tokens: training tweets in a seeded order, each followed by the
    end-of-text token, concatenated and cut into blocks (no padding, so every block has ``seq_len`` targets).
    ``data="random"``: uniform random token ids instead (seeded; for tests, which need no text).

    Returns:
        Token ids of shape (n_blocks, seq_len), int64.
    """
    from lab_utils.assets import load_smollm2_tokenizer
    from lab_utils.tweets import load_tweets

    if n_blocks < 1 or seq_len < 2:
        raise ValueError(f"n_blocks must be >= 1 and seq_len >= 2, got {n_blocks} and {seq_len}")
    if data not in DATA:
        raise ValueError(f"unknown data {data!r}; choose one of {DATA}")
    if data == "random":
        return torch.randint(0, VOCAB_SIZE, (n_blocks, seq_len), generator=torch.Generator().manual_seed(seed))
    tokenizer = load_smollm2_tokenizer()
    texts = load_tweets(binary=True)["train"].shuffle(seed=seed)["text"]
    ids: list[int] = []
    for start in range(0, len(texts), 256):  # tokenize only as many tweets as the blocks need
        for row in tokenizer(texts[start:start + 256])["input_ids"]:
            ids += [*row, tokenizer.eos_token_id]
        if len(ids) >= n_blocks * seq_len:
            break
    if len(ids) < n_blocks * seq_len:
        raise ValueError(f"the tweets hold {len(ids):,} tokens, fewer than {n_blocks} blocks of {seq_len}")
    return torch.tensor(ids[:n_blocks * seq_len]).view(n_blocks, seq_len)  # (n_blocks, seq_len)


def build_model(name: str, *, seed: int = 0) -> nn.Module:
    """SmolLM2-135M-Instruct in float32 (``"smollm2"``) or a tiny random model of its architecture (``"tiny"``).

    Returns:
        A ``LlamaForCausalLM`` on the CPU in train mode; its decoder layers are ``model.model.layers``.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    from lab_utils.assets import load_smollm2, quiet_transformers

    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {MODELS}")
    torch.manual_seed(seed)
    if name == "smollm2":
        return load_smollm2(dtype=torch.float32).train()
    # SmolLM2's special tokens: <|im_start|> = 1 (bos), <|im_end|> = 2 (eos, also its pad token).
    config = LlamaConfig(vocab_size=VOCAB_SIZE, tie_word_embeddings=True, pad_token_id=2, bos_token_id=1,
                         eos_token_id=2, **TINY)
    with quiet_transformers():
        return LlamaForCausalLM(config).train()


def run_engine(engine: str, template: nn.Module, batches: Tensor, *, device: torch.device, lr: float,
               autocast: torch.dtype | None) -> tuple[dict, list[float], dict[str, Tensor] | None]:
    """Train a copy of ``template`` under ``engine`` on this rank's share of every global batch.

    Args:
        engine: one of :data:`~lab_utils.distributed.engines.ENGINES`.
        template: the model every rank starts from (same weights on every rank), on the CPU.
        batches: (steps, global_batch, seq_len) token ids; rank r trains on rows r*b..(r+1)*b - 1 of each, b =
            global_batch / world_size.
        device: this rank's device; ``lr``: AdamW's learning rate; ``autocast``: bf16 (mixed precision) or None.

    Returns:
        ``(record, losses, weights)``: this rank's measurements, the global mean loss of every step (the mean over
        ranks of their mean losses), and for "ddp" on rank 0 the final weights on the CPU (else None).
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    share = batches.shape[1] // world
    model = copy.deepcopy(template).to(device)
    model, optimizer = wrap(model, engine, blocks=template_layers(model), device=device, lr=lr)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    record: dict = {"rank": rank}
    losses, seconds = [], []
    for step, batch in enumerate(batches):
        ids = batch[rank * share:(rank + 1) * share].to(device)  # (share, seq_len)
        synchronize(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast is not None):
            loss = model(input_ids=ids, labels=ids).loss
        if step == 0:
            record["gathered"] = gathered_parameter_bytes(model)  # full weights kept for backward
        loss.backward()
        if step == 0:
            record["gradients"] = held_gradient_bytes(model)
        optimizer.step()
        if step == 0:
            record["optimizer_state"] = held_optimizer_state_bytes(optimizer)
            record["weights"] = held_parameter_bytes(model)
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        seconds.append(time.perf_counter() - start)
        mean = loss.detach().float().clone()
        dist.all_reduce(mean)  # untimed: the loss of the global batch, for the record only
        losses.append(mean.item() / world)
    record["step_seconds"] = statistics.median(seconds[1:] or seconds)  # the first step also creates the state
    record["peak"] = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    weights = None
    if engine == "ddp" and rank == 0:
        weights = {k: v.detach().float().cpu().clone() for k, v in model.module.state_dict().items()}
    del model, optimizer
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return record, losses, weights


def template_layers(model: nn.Module) -> list[nn.Module]:
    """The decoder layers of a (possibly DDP-wrapped) Llama model: the units FSDP shards one by one."""
    inner = getattr(model, "module", model)
    return list(inner.model.layers)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file rank 0 writes")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cuda: one GPU per rank, NCCL")
    parser.add_argument("--model", choices=MODELS, default="tiny")
    parser.add_argument("--engines", default="ddp", help=f"comma-separated, from {', '.join(ENGINES)}")
    parser.add_argument("--global-batch", type=int, default=8, help="sequences per step, over all ranks")
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--autocast", choices=("none", "bf16"), default="none",
                        help="bf16: mixed precision (float32 weights, bf16 matrix products)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", choices=DATA, default="tweets")
    parser.add_argument("--save-weights", default=None, help="where rank 0 saves the weights after 'ddp'")
    parser.add_argument("--lora-rank", type=int, default=0,
                        help="> 0: freeze the model, train LoRA of this rank (alpha = 2 x rank) on q_proj and v_proj")
    args = parser.parse_args(argv)
    args.engines = args.engines.split(",")
    unknown = [e for e in args.engines if e not in ENGINES]
    if unknown:
        parser.error(f"unknown engines {unknown}; choose from {ENGINES}")
    if args.lora_rank < 0:
        parser.error(f"--lora-rank must be >= 0, got {args.lora_rank}")
    if args.lora_rank and not set(args.engines) <= {"local", "ddp"}:
        parser.error("--lora-rank runs under 'local' and 'ddp' only")
    return args


def main(argv: list[str] | None = None) -> None:
    """Entry point on every rank (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` set by torchrun)."""
    args = _parse(argv)
    use_cuda = args.device == "cuda"
    if use_cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local_rank)
        total = torch.cuda.get_device_properties(local_rank).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, GPU_MEMORY_CAP_GIB * 2**30 / total), local_rank)
    device = torch.device("cuda", torch.cuda.current_device()) if use_cuda else torch.device("cpu")
    dist.init_process_group("nccl" if use_cuda else "gloo")
    try:
        world = dist.get_world_size()
        if args.global_batch % world:
            raise ValueError(f"--global-batch {args.global_batch} must be a multiple of the {world} ranks")
        blocks = lm_blocks(args.steps * args.global_batch, args.seq_len, seed=args.seed, data=args.data)
        batches = blocks.view(args.steps, args.global_batch, args.seq_len)
        template = build_model(args.model, seed=args.seed)
        if args.lora_rank:  # only the adapters train: DDP all-reduces their gradients alone
            inject_lora(template, ("q_proj", "v_proj"), r=args.lora_rank, lora_alpha=2 * args.lora_rank,
                        trainable=())
        autocast = {"none": None, "bf16": torch.bfloat16}[args.autocast]
        results = {"world_size": world, "backend": dist.get_backend(), "device": device.type,
                   "model": args.model, "n_params": sum(p.numel() for p in template.parameters()),
                   "n_trainable": sum(p.numel() for p in template.parameters() if p.requires_grad),
                   "lora_rank": args.lora_rank,
                   "largest_param": max(p.numel() for p in template.parameters()),
                   "global_batch": args.global_batch, "seq_len": args.seq_len, "steps": args.steps,
                   "autocast": args.autocast, "data": args.data, "engines": {}}
        for engine in args.engines:
            record, losses, weights = run_engine(engine, template, batches, device=device, lr=args.lr,
                                                 autocast=autocast)
            records: list = [None] * world
            dist.all_gather_object(records, record)
            results["engines"][engine] = {"losses": losses, "ranks": records}
            if weights is not None and args.save_weights:
                torch.save(weights, args.save_weights)
        if dist.get_rank() == 0:
            Path(args.out).write_text(json.dumps(results, indent=1))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
