"""Identity from the trusted header or the local user; owner/admin rule; CSRF tokens and origins."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from discord_ml.cluster.provider import ClusterInfo, ClusterStatus
from discord_ml.xray.auth import AuthError, ForbiddenError, Identity, authorize, check_csrf, csrf_token, identify
from discord_ml.xray.config import XRayConfig

HEADER = XRayConfig(auth="header", secret="s")


def cluster(owner: str) -> ClusterInfo:
    return ClusterInfo(name="c", namespace="ml", backend="local", owner=owner, team="ads", purpose="adhoc",
                       gpu_pool="cpu", gpu_type="none", gpus_per_worker=0, workers_ready=0, workers_desired=0,
                       status=ClusterStatus.READY, reason="", created=datetime.now(UTC),
                       dashboard_url=None)  # fmt: skip


def test_header_mode_reads_user_and_groups_and_refuses_requests_without_the_header() -> None:
    who = identify({"X-Forwarded-User": "jane.doe@corp.com", "X-Forwarded-Groups": "ml, ml-platform-admins"}, HEADER)
    assert who == Identity("jane.doe@corp.com", frozenset({"ml", "ml-platform-admins"}), admin=True)
    assert not identify({"X-Forwarded-User": "bob"}, HEADER).admin
    for headers in ({}, {"X-Forwarded-User": "  "}):
        with pytest.raises(AuthError, match="the X-Forwarded-User header is missing"):
            identify(headers, HEADER)
    custom = XRayConfig(auth="header", user_header="X-Auth-Request-Email", admin_group="sre")
    assert identify({"X-Auth-Request-Email": "a@b", "X-Forwarded-Groups": "sre"}, custom).admin


def test_local_mode_is_the_local_user_whatever_the_headers_say() -> None:
    local = XRayConfig(auth="local", local_user="alice")
    assert identify({"X-Forwarded-User": "mallory", "X-Forwarded-Groups": "ml-platform-admins"}, local) == Identity(
        "alice", frozenset(), admin=False
    )


def test_only_the_owner_or_an_admin_may_manage_a_cluster() -> None:
    jane = Identity("jane.doe@corp.com", frozenset(), admin=False)
    assert jane.may_manage(cluster("jane.doe"))  # owner label from the e-mail's local part
    assert jane.may_manage(cluster("jane.doe-corp.com"))  # or from the whole sanitized address
    assert not jane.may_manage(cluster("bob"))
    assert Identity("root", frozenset({"ml-platform-admins"}), admin=True).may_manage(cluster("bob"))
    with pytest.raises(ForbiddenError, match=r"jane.doe@corp.com may not delete cluster 'c': only its owner \(bob\)"):
        authorize(jane, cluster("bob"), "delete", HEADER)


def test_csrf_token_is_per_user_and_checked_with_the_origin() -> None:
    alice, bob = Identity("alice", frozenset(), False), Identity("bob", frozenset(), False)
    token = csrf_token(alice, "s")
    assert token != csrf_token(bob, "s") and token != csrf_token(alice, "other-secret")
    check_csrf(alice, "s", token, origin="http://xray:8080", host="xray:8080")
    check_csrf(alice, "s", token, origin=None, host="xray:8080")  # same-origin fetches may omit Origin
    for bad in (None, "", csrf_token(bob, "s")):
        with pytest.raises(ForbiddenError, match="missing or wrong CSRF token"):
            check_csrf(alice, "s", bad, origin=None, host="xray")
    with pytest.raises(ForbiddenError, match=r"Origin https://evil\.example is not this site"):
        check_csrf(alice, "s", token, origin="https://evil.example", host="xray:8080")
