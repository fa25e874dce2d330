"""Platform settings, read from the environment so a deployment can override every one.

Kept free of heavy imports: the CLI and the code location read it at start-up.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from pydantic import BaseModel, Field

ENV_PREFIX = "DML_"


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
    return Settings(
        home=Path(env.get(f"{ENV_PREFIX}HOME", Path.home() / ".discord_ml")).expanduser(),
        pools_file=Path(env[f"{ENV_PREFIX}POOLS_FILE"]) if env.get(f"{ENV_PREFIX}POOLS_FILE") else None,
        allowed_registries=_csv(
            env.get(f"{ENV_PREFIX}ALLOWED_REGISTRIES", "docker.io/rayproject/,rayproject/,ghcr.io/discord-ml/")
        ),
        default_image=env.get(f"{ENV_PREFIX}DEFAULT_IMAGE", "rayproject/ray:2.60.0-py311"),
        default_namespace=env.get(f"{ENV_PREFIX}NAMESPACE", "ml"),
        platform_namespace=env.get(f"{ENV_PREFIX}PLATFORM_NAMESPACE", "ml-platform"),
    )
