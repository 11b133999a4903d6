"""The suite runs offline: the guard in conftest.py must really stop a connection (otherwise it guards nothing)."""

import os
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


def test_hub_is_offline():
    assert os.environ["HF_HUB_OFFLINE"] == "1"
