"""The suite runs offline: the guard in conftest.py must really stop a connection (otherwise it guards nothing)."""

import socket

import pytest


def test_non_loopback_connection_is_refused():
    with pytest.raises(RuntimeError, match="network connection"):
        socket.create_connection(("192.0.2.1", 80), timeout=1)  # TEST-NET-1: never routed anywhere


def test_loopback_is_allowed():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    with socket.create_connection(server.getsockname(), timeout=1):
        pass
    server.close()


def test_hub_refuses_downloads_without_trying_the_network(monkeypatch):
    # Offline mode (HF_HUB_OFFLINE=1, set by conftest.py before huggingface_hub is imported) answers from the cache
    # or fails at once. Online, the hub would first resolve huggingface.co: the DNS look-up is recorded here.
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    lookups = []

    def no_dns(host, *args, **kwargs):
        lookups.append(host)
        raise OSError(f"DNS look-up of {host!r} in an offline test")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(LocalEntryNotFoundError):
        huggingface_hub.hf_hub_download("some-org/a-model-nobody-cached", "config.json")
    assert lookups == [], f"the hub tried to reach {lookups}: offline mode is off"
