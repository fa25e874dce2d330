"""Platform settings, read from the environment so a deployment can override every one.

The one module that reads `DML_*` variables (and `DAGSTER_HOME`): everything else asks
`get_settings()` or is handed what it needs. Kept free of heavy imports: the CLI and the code
location read it at start-up.
"""

from __future__ import annotations

import functools
import getpass
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, Field

ENV_PREFIX = "DML_"
_N = TypeVar("_N", int, float)


class Settings(BaseModel):
    """Where the platform keeps its state and which policies it enforces."""

    home: Path = Field(description="Platform state directory: the local cluster registry, cluster temp dirs, tokens.")
    backend: str = Field(
        description="Cluster backend of the CLI and X-Ray when none is named: local or kuberay (DML_BACKEND)."
    )
    kuberay_dashboard: str = Field(
        description="How the kuberay backend reaches a head's dashboard: dns, service-ip or port-forward "
        "(DML_KUBERAY_DASHBOARD)."
    )
    owner: str = Field(description="Who the CLI acts as: DML_OWNER, else the login name.")
    git_sha: str | None = Field(
        default=None, description="Commit recorded on model cards when git is absent (DML_GIT_SHA, set in images)."
    )
    dagster_home: Path | None = Field(
        default=None, description="The Dagster instance the sweep and X-Ray ask for run statuses (DAGSTER_HOME)."
    )
    pools_file: Path | None = Field(
        default=None,
        description="YAML GPU pool catalog replacing the one shipped with the package (DML_POOLS_FILE).",
    )
    allowed_registries: tuple[str, ...] = Field(
        description="Registries (prefixes) cluster images may come from (DML_ALLOWED_REGISTRIES, comma-separated).",
    )
    default_image: str = Field(description="Ray image used when a spec names none (DML_DEFAULT_IMAGE).")
    default_namespace: str = Field(description="Kubernetes namespace used when a spec names none (DML_NAMESPACE).")
    data_root: str = Field(
        description="Root of the data lake: a path or a pyarrow/fsspec URL such as s3://bucket/ml (DML_DATA_ROOT).",
    )
    log_root: str = Field(
        description="Where Ray job logs are archived before their cluster is deleted: a path or a pyarrow/fsspec "
        "URL (DML_LOG_ROOT, else $DML_HOME/logs)."
    )
    archive_timeout_s: float = Field(
        description="Longest time archiving a cluster's job logs may hold up its deletion (DML_ARCHIVE_TIMEOUT_S)."
    )
    partitions_start: str = Field(
        description="First day of the daily partitions of the quests pipeline, YYYY-MM-DD (DML_PARTITIONS_START).",
    )
    local_start_timeout_s: float = Field(
        gt=0,
        description=(
            "Seconds one local Ray node (head or worker) may take to come up before it is restarted with fresh "
            "ports and a fresh temp dir (DML_LOCAL_START_TIMEOUT_S); raise it on a slow or busy machine."
        ),
    )
    local_start_attempts: int = Field(
        ge=1,
        le=10,
        description="How often a local Ray node is started before the cluster gives up (DML_LOCAL_START_ATTEMPTS).",
    )
    platform_namespace: str = Field(
        description=(
            "Namespace of the platform (Dagster, X-Ray), the only one allowed to reach Ray dashboards "
            "(DML_PLATFORM_NAMESPACE)."
        ),
    )


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def get_settings() -> Settings:
    """Settings from the environment; read again whenever one of its variables has changed."""
    names = [k for k in os.environ if k.startswith(ENV_PREFIX) or k == "DAGSTER_HOME"]
    return _settings(tuple(sorted((k, os.environ[k]) for k in names)))


def environment(prefix: str) -> dict[str, str]:
    """The set `DML_*` variables whose names start with `prefix` (e.g. `DML_XRAY_`), by name."""
    return {k: v for k, v in os.environ.items() if k.startswith(prefix) and k.startswith(ENV_PREFIX) and v}


@functools.lru_cache(maxsize=8)
def _settings(items: tuple[tuple[str, str], ...]) -> Settings:
    env = dict(items)
    home = Path(env.get(f"{ENV_PREFIX}HOME", Path.home() / ".discord_ml")).expanduser()
    return Settings(
        home=home,
        backend=env.get(f"{ENV_PREFIX}BACKEND") or "local",
        kuberay_dashboard=env.get(f"{ENV_PREFIX}KUBERAY_DASHBOARD") or "dns",
        owner=env.get(f"{ENV_PREFIX}OWNER") or getpass.getuser(),
        git_sha=env.get(f"{ENV_PREFIX}GIT_SHA") or None,
        dagster_home=Path(env["DAGSTER_HOME"]) if env.get("DAGSTER_HOME") else None,
        data_root=env.get(f"{ENV_PREFIX}DATA_ROOT") or str(home / "data"),
        log_root=env.get(f"{ENV_PREFIX}LOG_ROOT") or str(home / "logs"),
        archive_timeout_s=_number(env, "ARCHIVE_TIMEOUT_S", "30", float),
        partitions_start=env.get(f"{ENV_PREFIX}PARTITIONS_START", "2026-01-01"),
        pools_file=Path(env[f"{ENV_PREFIX}POOLS_FILE"]) if env.get(f"{ENV_PREFIX}POOLS_FILE") else None,
        allowed_registries=_csv(
            env.get(f"{ENV_PREFIX}ALLOWED_REGISTRIES", "docker.io/rayproject/,rayproject/,ghcr.io/discord-ml/")
        ),
        default_image=env.get(f"{ENV_PREFIX}DEFAULT_IMAGE", "rayproject/ray:2.60.0-py311"),
        default_namespace=env.get(f"{ENV_PREFIX}NAMESPACE", "ml"),
        platform_namespace=env.get(f"{ENV_PREFIX}PLATFORM_NAMESPACE", "ml-platform"),
        # 120 s holds on a 2-core machine with one core kept busy (a head needs 10 s idle, up to ~60 s there).
        local_start_timeout_s=_number(env, "LOCAL_START_TIMEOUT_S", "120", float),
        local_start_attempts=_number(env, "LOCAL_START_ATTEMPTS", "3", int),
    )


def _number(env: Mapping[str, str], name: str, default: str, kind: type[_N]) -> _N:
    raw = env.get(ENV_PREFIX + name, default)
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"{ENV_PREFIX}{name}={raw!r} is not a number; set it to e.g. {default} or unset it") from None
