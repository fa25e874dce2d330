"""PortForward's own behaviour, with streams that are plain TCP connections to an echo server
(the Kubernetes path is tested through the emulator in test_kuberay and the CLI tests)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from discord_ml.cluster.kuberay.portforward import ForwardError, PortForward


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that sends back what it gets, upper-cased."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data.upper())

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


def _tcp_streams(port: int, opened: list[int]) -> Callable[[int], tuple[Any, Callable[[], None]]]:
    def open_stream(remote_port: int) -> tuple[Any, Callable[[], None]]:
        opened.append(remote_port)
        conn = socket.create_connection(("127.0.0.1", port))
        return conn, conn.close

    return open_stream


def _roundtrip(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(payload)
        received = b""
        while len(received) < len(payload):
            chunk = conn.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


def test_each_connection_gets_its_own_stream_and_bytes_flow_both_ways(echo_port: int) -> None:
    opened: list[int] = []
    with PortForward(_tcp_streams(echo_port, opened), 8265, what="dashboard") as forward:
        payloads = [bytes([97 + i % 26]) * (1 + i * 40_000) for i in range(8)]  # up to ~280 kB each
        with ThreadPoolExecutor(4) as pool:
            echoed = list(pool.map(lambda p: _roundtrip(forward.local_port, p), payloads))
        assert echoed == [p.upper() for p in payloads]
        assert opened == [8265] * len(payloads)
        assert forward.errors == []


def test_close_ends_live_connections_and_the_port(echo_port: int) -> None:
    forward = PortForward(_tcp_streams(echo_port, []), 10001)
    conn = socket.create_connection(("127.0.0.1", forward.local_port), timeout=10)
    conn.sendall(b"hi")
    assert conn.recv(10) == b"HI"
    assert forward.connections == 1
    forward.close()
    assert conn.recv(10) == b""  # the carried connection was ended, not left hanging
    assert not forward.open and forward.connections == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", forward.local_port), timeout=5)
    conn.close()


def test_a_stream_that_cannot_open_closes_that_connection_and_says_why() -> None:
    def refuse(port: int) -> tuple[Any, Callable[[], None]]:
        raise RuntimeError(f"no running head pod for port {port}")

    with PortForward(refuse, 8265, what="dashboard of ml/gone") as forward:
        with socket.create_connection(("127.0.0.1", forward.local_port), timeout=10) as conn:
            assert conn.recv(10) == b""
        deadline = time.monotonic() + 5
        while not forward.errors and time.monotonic() < deadline:
            time.sleep(0.05)
        assert forward.errors == ["dashboard of ml/gone: no running head pod for port 8265"]
        assert forward.open  # later connections try again (the head pod may be back)


def test_a_taken_local_port_is_a_clear_error(echo_port: int) -> None:
    with pytest.raises(ForwardError, match=rf"cannot listen on 127.0.0.1:{echo_port} for the dashboard: "):
        PortForward(_tcp_streams(echo_port, []), 8265, local_port=echo_port, what="dashboard")
