"""Who is asking, what they may do, and CSRF tokens for the POSTs.

The identity comes from a trusted header set by the auth proxy in front of X-Ray (`header` mode) or
is the local user (`local` mode, loopback only). Only a cluster's owner or the admin group may act on it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlparse

from discord_ml.cluster.names import sanitize_label_value
from discord_ml.cluster.provider import ClusterInfo
from discord_ml.xray.config import XRayConfig


class AuthError(Exception):
    """The request carries no usable identity (HTTP 401)."""


class ForbiddenError(Exception):
    """The identity may not do this (HTTP 403); the message says who may."""


@dataclass(frozen=True)
class Identity:
    """An authenticated user."""

    user: str
    groups: frozenset[str]
    admin: bool

    def owns(self, cluster: ClusterInfo) -> bool:
        """Whether the cluster's owner label is this user (or the local part of their e-mail address)."""
        names = {self.user, self.user.split("@", 1)[0]}
        return cluster.owner in {sanitize_label_value(n) for n in names if n}

    def may_manage(self, cluster: ClusterInfo) -> bool:
        """Owner or admin: may delete the cluster or attach a notebook to it."""
        return self.admin or self.owns(cluster)


def identify(headers: Mapping[str, str], config: XRayConfig) -> Identity:
    """The identity of a request.

    Raises:
        AuthError: `header` mode and the trusted header is missing or empty.
    """
    if config.auth == "local":
        return Identity(config.local_user, frozenset(), admin=False)
    user = (headers.get(config.user_header) or "").strip()
    if not user:
        raise AuthError(
            f"no user: the {config.user_header} header is missing; X-Ray must be reached through the "
            "authenticating proxy (DML_XRAY_AUTH=header)"
        )
    groups = frozenset(g.strip() for g in (headers.get(config.groups_header) or "").split(",") if g.strip())
    return Identity(user, groups, admin=config.admin_group in groups)


def authorize(identity: Identity, cluster: ClusterInfo, action: str, config: XRayConfig) -> None:
    """Raise ForbiddenError unless `identity` owns the cluster or is an admin."""
    if not identity.may_manage(cluster):
        raise ForbiddenError(
            f"{identity.user} may not {action} cluster {cluster.name!r}: only its owner ({cluster.owner}) "
            f"or a member of {config.admin_group} may"
        )


def csrf_token(identity: Identity, secret: str) -> str:
    """The user's CSRF token: a MAC of their name that another site cannot read or forge."""
    return hmac.new(secret.encode(), f"xray-csrf:{identity.user}".encode(), hashlib.sha256).hexdigest()


def check_csrf(identity: Identity, secret: str, token: str | None, *, origin: str | None, host: str | None) -> None:
    """Refuse a state-changing request without the user's token or from another origin.

    Raises:
        ForbiddenError: naming what was wrong.
    """
    if origin and origin != "null" and host and urlparse(origin).netloc != host:
        raise ForbiddenError(f"cross-origin request refused: Origin {origin} is not this site ({host})")
    if not token or not hmac.compare_digest(token, csrf_token(identity, secret)):
        raise ForbiddenError(
            "missing or wrong CSRF token: send the X-CSRF-Token header (or csrf_token form field) "
            "from the page or from GET /api/me"
        )
