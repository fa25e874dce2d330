"""X-Ray settings, from the environment (DML_XRAY_*) so a Deployment can set each one."""

from __future__ import annotations

import getpass
import secrets
from typing import Literal

from pydantic import BaseModel, Field

from discord_ml.cluster.backends import BACKENDS, default_backend
from discord_ml.settings import environment

AuthMode = Literal["local", "header"]


class XRayConfig(BaseModel):
    """How X-Ray authenticates users and where it finds clusters and Dagster runs."""

    auth: AuthMode = Field(
        default="local",
        description=(
            "`local`: every request is the local user (only on a loopback address); `header`: the user "
            "comes from `user_header`, set by an authenticating proxy (DML_XRAY_AUTH)."
        ),
    )
    user_header: str = Field(
        default="X-Forwarded-User", description="Trusted header naming the user (DML_XRAY_USER_HEADER)."
    )
    groups_header: str = Field(
        default="X-Forwarded-Groups",
        description="Trusted header listing the user's groups, comma-separated (DML_XRAY_GROUPS_HEADER).",
    )
    admin_group: str = Field(
        default="ml-platform-admins",
        description="Members may delete any cluster; others only their own (DML_XRAY_ADMIN_GROUP).",
    )
    local_user: str = Field(
        default_factory=getpass.getuser, description="The user in `local` mode (DML_OWNER, else the OS user)."
    )
    secret: str = Field(
        default_factory=lambda: secrets.token_urlsafe(32),
        description="Key of the CSRF tokens; set it (DML_XRAY_SECRET) when several replicas serve X-Ray.",
    )
    backends: tuple[str, ...] = Field(
        default_factory=lambda: (default_backend(),),
        description=f"Backends whose clusters are shown, of {', '.join(BACKENDS)} (DML_XRAY_BACKENDS).",
    )
    dagster_url: str = Field(
        default="http://127.0.0.1:3000",
        description="Dagster UI base URL, for the links to the run owning a cluster (DML_DAGSTER_URL).",
    )
    refresh_seconds: float = Field(
        default=3.0, gt=0, le=600, description="How often pages refresh their tables (DML_XRAY_REFRESH_SECONDS)."
    )
    notebook_host: str = Field(
        default="127.0.0.1",
        description="Address notebooks launched from X-Ray listen on and are linked at (DML_XRAY_NOTEBOOK_HOST).",
    )

    @classmethod
    def from_env(cls, **overrides: object) -> XRayConfig:
        """Settings from DML_XRAY_* (and DML_OWNER, DML_DAGSTER_URL), then `overrides`."""
        env = environment("DML_")
        names = {"auth": "DML_XRAY_AUTH", "user_header": "DML_XRAY_USER_HEADER",
                 "groups_header": "DML_XRAY_GROUPS_HEADER", "admin_group": "DML_XRAY_ADMIN_GROUP",
                 "local_user": "DML_OWNER", "secret": "DML_XRAY_SECRET", "dagster_url": "DML_DAGSTER_URL",
                 "refresh_seconds": "DML_XRAY_REFRESH_SECONDS", "notebook_host": "DML_XRAY_NOTEBOOK_HOST"}  # fmt: skip
        values: dict[str, object] = {field: env[var] for field, var in names.items() if env.get(var)}
        if env.get("DML_XRAY_BACKENDS"):
            values["backends"] = tuple(b.strip() for b in env["DML_XRAY_BACKENDS"].split(",") if b.strip())
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)
