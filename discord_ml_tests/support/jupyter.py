"""Driving a real JupyterLab's kernels over its REST API and kernel websocket (the Jupyter protocol)."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from typing import Any

import websocket


def open_kernel(base: str, token: str) -> tuple[str, Any]:
    """Start a kernel; its id and an open channels websocket."""
    headers = {"Authorization": f"token {token}"}
    request = urllib.request.Request(f"{base}/api/kernels", data=b"{}", headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        kernel = json.load(response)["id"]
    ws = websocket.create_connection(f"{base.replace('http', 'ws', 1)}/api/kernels/{kernel}/channels",
                                     header=[f"Authorization: token {token}"], timeout=180)  # fmt: skip
    return kernel, ws


def execute(ws: Any, code: str) -> str:
    """Send an execute_request; its message id."""
    msg_id = uuid.uuid4().hex
    header = {"msg_id": msg_id, "msg_type": "execute_request", "username": "t", "session": "s", "version": "5.3"}
    content = {"code": code, "silent": False, "store_history": False}
    ws.send(json.dumps({"header": header, "parent_header": {}, "metadata": {}, "channel": "shell", "content": content}))
    return msg_id


def replies(ws: Any, msg_id: str, timeout: float) -> Any:
    """The messages answering `msg_id`, until the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = json.loads(ws.recv())
        if msg.get("parent_header", {}).get("msg_id") == msg_id:
            yield msg


def run_in_kernel(base: str, token: str, code: str, timeout: float = 180) -> str:
    """Run `code` in a new kernel; what it printed (and any traceback)."""
    _, ws = open_kernel(base, token)
    out = []
    for msg in replies(ws, execute(ws, code), timeout):
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            out.append("\n".join(msg["content"]["traceback"]))
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    ws.close()
    return "".join(out)


def busy_kernel(base: str, token: str, seconds: int = 120) -> str:
    """A kernel left executing a long cell (Jupyter reports it busy); its id."""
    kernel, ws = open_kernel(base, token)
    for msg in replies(ws, execute(ws, f"import time; time.sleep({seconds})"), 60):
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "busy":
            break
    ws.close()
    return kernel
