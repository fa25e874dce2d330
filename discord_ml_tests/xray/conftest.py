"""X-Ray fixtures: real local Ray clusters in a registry of their own, and X-Ray served over real HTTP."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from discord_ml.cluster.lifecycle import RunStatuses, no_run_statuses
from discord_ml.cluster.local.provider import LocalRayProvider
from discord_ml.cluster.spec import ClusterSpec
from discord_ml.xray.app import create_app
from discord_ml.xray.config import XRayConfig

SECRET = "test-csrf-secret"


@dataclass
class XRayWorld:
    """The clusters every X-Ray test sees: alice's (team ads, no workers) and bob's (team quests, 1 worker)."""

    provider: LocalRayProvider
    home: Path

    def spec(self, name: str, owner: str, team: str, workers: int = 0, **fields: Any) -> ClusterSpec:
        return ClusterSpec.build(name=name, owner=owner, team=team, workers=workers, head_memory="1Gi",
                                 worker_memory="1Gi", ttl="1h", **fields)  # fmt: skip


@pytest.fixture(scope="session")  # shared by the integration (API) and e2e (browser) tiers
def xray_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[XRayWorld]:
    home = tmp_path_factory.mktemp("xray")
    world = XRayWorld(LocalRayProvider(home / "local"), home)
    specs = [world.spec("xr-alice", "alice", "ads", purpose="train"), world.spec("xr-bob", "bob", "quests", 1)]
    for spec in specs:  # one after the other: local starts are serialized anyway (a machine-wide lock)
        world.provider.create(spec)
    yield world
    for info in world.provider.list():
        world.provider.delete(info.name, namespace=info.namespace)


def make_app(world: XRayWorld, *, auth: str = "header", run_statuses: RunStatuses = no_run_statuses,
             **config: object) -> FastAPI:  # fmt: skip
    settings = XRayConfig.model_validate({"auth": auth, "secret": SECRET, "backends": ("local",),
                                          "local_user": "alice", "refresh_seconds": 1, **config})  # fmt: skip
    return create_app(settings, providers={"local": world.provider}, run_statuses=run_statuses,
                      notebooks_root=world.home / "notebooks")  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")  # shared by the integration (API) and e2e (browser) tiers
def xray_server(xray_world: XRayWorld) -> Iterator[str]:
    """X-Ray (header auth, like behind the proxy) served by uvicorn on a loopback port; yields its base URL."""
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(make_app(xray_world), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
