"""Without a usable kubeconfig the provider says what is wrong and what to do, in one line (the kube
tier checks the API-side cases against the real API server: down, 401, 403)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from discord_ml.cluster.kuberay.provider import KubeRayProvider
from discord_ml.cluster.provider import ClusterUnavailableError


def _config(tmp_path: Path, **changes: object) -> Path:
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "a",
        "clusters": [{"name": "a", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "a", "user": {"token": "t"}}],
        "contexts": [{"name": "a", "context": {"cluster": "a", "user": "a"}}],
        **changes,
    }  # fmt: skip
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def test_missing_broken_and_contextless_kubeconfigs_are_one_line_each(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ClusterUnavailableError, match=rf"kubeconfig {missing} does not exist; point KUBECONFIG"):
        KubeRayProvider(kubeconfig=str(missing))
    broken = tmp_path / "broken"
    broken.write_text("clusters: [unclosed")
    with pytest.raises(
        ClusterUnavailableError,
        match=rf"kubeconfig {broken} is not valid YAML \(expected ',' or '\]', but got '<stream end>' at line 1\)",
    ):
        KubeRayProvider(kubeconfig=str(broken))
    unknown = _config(tmp_path, **{"current-context": "elsewhere"})
    with pytest.raises(ClusterUnavailableError, match=r"is not usable: .*elsewhere.*get-contexts") as exc:
        KubeRayProvider(kubeconfig=str(unknown))
    assert "\n" not in str(exc.value)
