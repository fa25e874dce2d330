"""The environment `dml cluster env` prints, for backends with and without a token file of their own."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from discord_ml.cluster.attach import ray_env, render, token_file
from discord_ml.cluster.provider import ClusterConnection

HEAD = "ranking-head-svc.team-a.svc.cluster.local"
KUBERAY = ClusterConnection(f"http://{HEAD}:8265", {"Authorization": "Bearer s3cr'et"})


def test_a_token_without_a_file_is_written_owner_only_and_replaced_whole(tmp_path: Path) -> None:
    path = token_file(KUBERAY, home=tmp_path, namespace="team-a", name="ranking")
    assert path == tmp_path / "tokens" / "team-a.ranking"
    assert path.read_text() == "s3cr'et"
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    rotated = ClusterConnection(KUBERAY.dashboard_url, {"Authorization": "Bearer new"})
    assert token_file(rotated, home=tmp_path, namespace="team-a", name="ranking").read_text() == "new"
    assert sorted(p.name for p in path.parent.iterdir()) == ["team-a.ranking"]  # no partial file left


def test_a_backend_token_file_is_used_as_it_is(tmp_path: Path) -> None:
    local = ClusterConnection("http://127.0.0.1:8265", {"Authorization": "Bearer x"}, "127.0.0.1:6379", "/run/t")
    assert token_file(local, home=tmp_path, namespace="default", name="a") == Path("/run/t")
    assert not (tmp_path / "tokens").exists()


def test_kuberay_clients_use_ray_client_and_the_head_service(tmp_path: Path) -> None:
    env = ray_env(KUBERAY, tmp_path / "t")
    assert env == {
        "RAY_ADDRESS": f"ray://{HEAD}:10001",
        "RAY_API_SERVER_ADDRESS": KUBERAY.dashboard_url,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(tmp_path / "t"),
    }


@pytest.mark.integration
def test_each_shell_reads_back_what_was_printed(tmp_path: Path) -> None:
    env = ray_env(KUBERAY, tmp_path / "a dir with 'quotes'" / "t")
    echo = " ".join(f'"${key}"' for key in env)
    bash = subprocess.run(["bash", "-c", f"{render(env, 'bash')}\nprintf '%s\\n' {echo}"], capture_output=True,
                          text=True, check=True).stdout  # fmt: skip
    assert bash.splitlines() == list(env.values())
    assert json.loads(render(env, "json")) == env
    assert render(env, "fish").splitlines()[0] == f"set -gx RAY_ADDRESS ray://{HEAD}:10001;"
