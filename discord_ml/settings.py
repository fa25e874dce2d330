"""Platform settings, read from the environment so a deployment can override every one.

Kept free of heavy imports: the CLI and the code location read it at start-up.
"""

from __future__ import annotations

import functools
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


@functools.cache
def get_settings() -> Settings:
    """Settings from the environment (cached; call `get_settings.cache_clear()` after changing it)."""
    env = os.environ
    home = Path(env.get(f"{ENV_PREFIX}HOME", Path.home() / ".discord_ml")).expanduser()
    return Settings(
        home=home,
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
