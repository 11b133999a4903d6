"""Shared test setup: no network, offline hub, deterministic seeds."""

import os
import socket

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_LOOPBACK = {"127.0.0.1", "::1", "localhost"}
_connect = socket.socket.connect


def _guarded_connect(sock, address):
    # Unix sockets and loopback (Jupyter kernels talk over it) are fine; anything else is a test bug.
    if sock.family == socket.AF_UNIX or (isinstance(address, tuple) and address[0] in _LOOPBACK):
        return _connect(sock, address)
    raise RuntimeError(f"test tried to open a network connection to {address!r}; the course runs offline")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Fail any test that opens a socket to a non-loopback address."""
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)


@pytest.fixture
def tiny_llama():
    """A randomly initialised 2-layer Llama (transformers' own causal LM) with 64 tokens: 0 = pad, 1 = bos, 2 = eos."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()
