"""The server side of the Kubernetes API's `pods/portforward` over websocket (the channel protocol
of `v4.channel.k8s.io`), for the API emulator.

Per requested port `i` there are two channels: data `2i` and error `2i+1`. The server first sends
each channel's port number (2 bytes, little-endian), then every binary frame is the channel byte
followed by payload. Frames from the client are masked (RFC 6455); frames from the server are not.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import select
import socket
import struct
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler
from typing import BinaryIO

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
BINARY, CLOSE, PING, PONG = 0x2, 0x8, 0x9, 0xA
PROTOCOL = "v4.channel.k8s.io"


def _read_exact(stream: BinaryIO, n: int) -> bytes | None:
    try:
        data = stream.read(n)
    except OSError:  # the client went away (reset): the end of the stream
        return None
    return data if data is not None and len(data) == n else None


def read_frame(stream: BinaryIO) -> tuple[int, bytes] | None:
    """One frame's opcode and (unmasked) payload; None at end of stream."""
    head = _read_exact(stream, 2)
    if head is None:
        return None
    opcode, masked, length = head[0] & 0x0F, head[1] & 0x80, head[1] & 0x7F
    if length in (126, 127):
        size = 2 if length == 126 else 8
        raw = _read_exact(stream, size)
        if raw is None:
            return None
        length = int.from_bytes(raw, "big")
    mask = _read_exact(stream, 4) if masked else b"\0\0\0\0"
    payload = _read_exact(stream, length) if length else b""
    if mask is None or payload is None:
        return None
    if masked:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return opcode, payload


def frame(opcode: int, payload: bytes) -> bytes:
    """A final, unmasked frame."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return header + payload


def serve(handler: BaseHTTPRequestHandler, targets: Mapping[int, int | None], *, pod: str) -> None:
    """Upgrade the request to a websocket and carry each port's channel to `127.0.0.1:targets[port]`
    until either side closes. A port with no target (None) or a refused connection gets the
    kubelet's error on its error channel."""
    key = handler.headers.get("Sec-WebSocket-Key", "")
    accept = base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()
    handler.send_response(101, "Switching Protocols")
    handler.send_header("Upgrade", "websocket")
    handler.send_header("Connection", "Upgrade")
    handler.send_header("Sec-WebSocket-Accept", accept)
    handler.send_header("Sec-WebSocket-Protocol", PROTOCOL)
    handler.end_headers()
    handler.close_connection = True
    write_lock = threading.Lock()

    def send(opcode: int, payload: bytes) -> None:
        with write_lock, contextlib.suppress(OSError):
            handler.wfile.write(frame(opcode, payload))
            handler.wfile.flush()

    sockets: dict[int, socket.socket] = {}  # data channel -> connection to the target
    for index, (port, target) in enumerate(targets.items()):
        for channel in (2 * index, 2 * index + 1):
            send(BINARY, bytes([channel]) + port.to_bytes(2, "little"))
        try:
            if target is None:
                raise ConnectionRefusedError
            sockets[2 * index] = socket.create_connection(("127.0.0.1", target), timeout=10)
        except OSError:
            message = f"error forwarding port {port} to pod {pod}: failed to connect to localhost:{port}: refused"
            send(BINARY, bytes([2 * index + 1]) + message.encode())
    done = threading.Event()

    def from_client() -> None:
        while not done.is_set():
            got = read_frame(handler.rfile)  # type: ignore[arg-type]  # a buffered socket file
            if got is None or got[0] == CLOSE:
                break
            opcode, payload = got
            if opcode == PING:
                send(PONG, payload)
            elif opcode == BINARY and payload and payload[0] in sockets:
                try:
                    sockets[payload[0]].sendall(payload[1:])
                except OSError:
                    break
        done.set()

    reader = threading.Thread(target=from_client, daemon=True)
    reader.start()
    by_socket = {s: channel for channel, s in sockets.items()}
    while not done.is_set() and by_socket:
        readable, _, _ = select.select(list(by_socket), [], [], 0.2)
        for conn in readable:
            try:
                data = conn.recv(1 << 16)
            except OSError:
                data = b""
            if not data:
                done.set()
                break
            send(BINARY, bytes([by_socket[conn]]) + data)
    done.set()
    for conn in sockets.values():
        conn.close()
    send(CLOSE, struct.pack("!H", 1000))
    with contextlib.suppress(OSError):
        handler.connection.shutdown(socket.SHUT_RDWR)
    reader.join(timeout=10)
