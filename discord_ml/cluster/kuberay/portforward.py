"""Local ports carried to a pod's ports through the Kubernetes API (`pods/portforward`), like
`kubectl port-forward`, for laptops that cannot resolve in-cluster addresses.

The `kubernetes` client's port-forward carries one TCP connection per websocket, so each
connection accepted on 127.0.0.1 opens its own stream. The pod is looked up again for each one:
a restarted head pod (new name) is followed without restarting the forward.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Callable
from typing import Any

LOCALHOST = "127.0.0.1"
# A function that opens one stream to the pod's `remote_port` and returns a socket-like object
# (what `kubernetes.stream.portforward(...).socket(port)` gives) plus a closer for the stream.
OpenStream = Callable[[int], tuple[Any, Callable[[], None]]]


class ForwardError(RuntimeError):
    """A local port could not be opened (in use, or not allowed)."""


class PortForward:
    """One local listener on 127.0.0.1 whose connections reach `remote_port` in a pod."""

    def __init__(self, open_stream: OpenStream, remote_port: int, *, local_port: int = 0, what: str = "") -> None:
        """Args:
        open_stream: opens one stream to the pod (see `OpenStream`).
        remote_port: the pod's port.
        local_port: the port on 127.0.0.1; 0 picks a free one.
        what: a name for messages (`dashboard of ml/ranking`).

        Raises:
            ForwardError: the local port is taken.
        """
        self.remote_port, self.what = remote_port, what or f"port {remote_port}"
        self._open = open_stream
        try:
            self._listener = socket.create_server((LOCALHOST, local_port))
        except OSError as exc:
            where = f"{LOCALHOST}:{local_port}"
            raise ForwardError(f"cannot listen on {where} for the {self.what}: {exc.strerror}") from None
        self.local_port: int = self._listener.getsockname()[1]
        self.errors: list[str] = []  # why streams failed to open, newest last
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._live: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        accept = threading.Thread(target=self._accept, name=f"port-forward {self.what}", daemon=True)
        accept.start()
        self._threads.append(accept)

    @property
    def address(self) -> str:
        """`127.0.0.1:<local port>`."""
        return f"{LOCALHOST}:{self.local_port}"

    @property
    def open(self) -> bool:
        """Whether it still accepts connections."""
        return not self._closed.is_set()

    @property
    def connections(self) -> int:
        """Connections being carried now."""
        with self._lock:
            return len(self._live)

    def close(self) -> None:
        """Stop listening, end every carried connection and wait for its thread."""
        if self._closed.is_set():
            return
        self._closed.set()
        # shutdown() wakes the accept() blocked in another thread; close() alone does not on Linux.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            live = list(self._live)
        for conn in live:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=10)

    def __enter__(self) -> PortForward:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- internals ---------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._carry, args=(conn,), name=f"port-forward {self.what}", daemon=True)
            with self._lock:
                self._live.add(conn)
                self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()

    def _carry(self, conn: socket.socket) -> None:
        try:
            try:
                stream, close_stream = self._open(self.remote_port)
            except Exception as exc:  # reported through `errors`; only this connection closes
                self.errors.append(f"{self.what}: {exc}")
                return
            try:
                _pump(conn, stream, self._closed)
            finally:
                close_stream()
        finally:
            with self._lock:
                self._live.discard(conn)
            conn.close()


def _pump(a: socket.socket, b: Any, stop: threading.Event) -> None:
    """Copy bytes both ways until either side ends (or `stop` is set)."""
    while not stop.is_set():
        try:
            readable, _, _ = select.select([a, b], [], [], 0.5)
        except (OSError, ValueError):  # a side was closed under us
            return
        for source in readable:
            target = b if source is a else a
            try:
                data = source.recv(1 << 16)
                if not data:
                    return
                target.sendall(data)
            except OSError:
                return
