"""A fault-injecting proxy in front of a Kubernetes API server (real or emulated), on 127.0.0.1.

It forwards every request (over TLS with a client certificate, for the real one) and, for the
requests a rule matches, forwards it and then drops the answer, replying 503: the write happened
but the client never hears so, as with a load balancer that times out.
"""

from __future__ import annotations

import json
import re
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml


@dataclass
class LoseAnswers:
    """Forward `method` requests whose path matches `path`, then answer 503; `times` of them (-1: all)."""

    method: str
    path: str
    times: int = 1
    seen: list[str] = field(default_factory=list)

    def take(self, method: str, path: str) -> bool:
        if method != self.method or not re.search(self.path, path) or self.times == 0:
            return False
        self.times -= 1
        self.seen.append(path)
        return True


class _Handler(BaseHTTPRequestHandler):
    upstream: str
    context: ssl.SSLContext | None
    rules: list[LoseAnswers]
    lock: threading.Lock

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        dropped = ("host", "content-length", "connection", "authorization")  # the proxy authenticates upstream
        headers = {k: v for k, v in self.headers.items() if k.lower() not in dropped}
        request = urllib.request.Request(self.upstream + self.path, data=body, method=self.command, headers=headers)
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=60) as response:
                status, answer, kind = response.status, response.read(), response.headers.get("Content-Type")
        except urllib.error.HTTPError as e:
            status, answer, kind = e.code, e.read(), e.headers.get("Content-Type")
        with self.lock:
            lost = any(rule.take(self.command, self.path) for rule in self.rules)
        if lost:
            status, kind = 503, "application/json"
            lost_status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 503}
            lost_status |= {"reason": "ServiceUnavailable", "message": "upstream answer lost (injected)"}
            answer = json.dumps(lost_status).encode()
        self.send_response(status)
        self.send_header("Content-Type", kind or "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward  # noqa: N815  # http.server's names

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def faulty_proxy(
    upstream: str, kubeconfig_out: Path, *, context: ssl.SSLContext | None = None, namespace: str = "ml"
) -> Iterator[list[LoseAnswers]]:
    """Serve the proxy; write a kubeconfig for it to `kubeconfig_out`; yield its (mutable) list of rules."""
    rules: list[LoseAnswers] = []
    handler = type(
        "Handler", (_Handler,), {"upstream": upstream, "context": context, "rules": rules, "lock": threading.Lock()}
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    kubeconfig_out.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "proxy",
                "clusters": [{"name": "proxy", "cluster": {"server": url}}],
                "users": [{"name": "proxy", "user": {"token": "unused-the-proxy-authenticates"}}],
                "contexts": [
                    {"name": "proxy", "context": {"cluster": "proxy", "user": "proxy", "namespace": namespace}}
                ],
            }
        )
    )
    try:
        yield rules
    finally:
        server.shutdown()
        server.server_close()
