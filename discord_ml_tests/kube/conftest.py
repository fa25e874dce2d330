"""The kube tier: the project against a real control plane (etcd, kube-apiserver, controller manager,
scheduler) and the real KubeRay operator, built from Go modules (see support/kube). One testbed per
session, with deploy/platform applied and nodes shaped like the pool catalog's."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from discord_ml_tests.support.kube.build import ToolchainMissingError
from discord_ml_tests.support.kube.nodes import pool_nodes
from discord_ml_tests.support.kube.testbed import Testbed

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "platform"
# Nodes: one CPU node (16 CPU, 64Gi) and one H100 node (8 GPUs), from the pool catalog.
NODES = {"cpu": 1, "h100": 1}


def apply_platform(bed: Testbed) -> None:
    """deploy/platform as an administrator applies it (kubectl apply -f deploy/platform)."""
    from kubernetes import config, utils

    api = config.new_client_from_config(config_file=str(bed.kubeconfig))
    for path in sorted(DEPLOY.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                utils.create_from_dict(api, doc)
    api.close()


@pytest.fixture(scope="session")
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    root = tmp_path_factory.mktemp("testbed")
    try:
        bed = Testbed(root)
        bed.__enter__()
    except ToolchainMissingError as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"kube tier skipped: {exc}")
    try:
        apply_platform(bed)
        with pool_nodes(bed, NODES):
            yield bed
    finally:
        bed.stop()
    assert bed.leftovers() == [], "the testbed left these behind"


@pytest.fixture
def as_admin(testbed: Testbed, monkeypatch: pytest.MonkeyPatch) -> Testbed:
    """KUBECONFIG pointing at the testbed as its administrator."""
    monkeypatch.setenv("KUBECONFIG", str(testbed.kubeconfig))
    return testbed
