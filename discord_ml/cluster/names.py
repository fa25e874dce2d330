"""Kubernetes naming rules (RFC 1123 / 1035 names, label keys and values) as pure checks."""

from __future__ import annotations

import re

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# KubeRay names the head service `<cluster>-head-svc` and pods `<cluster>-<group>-worker-<5>`;
# a Service name is a DNS-1035 label (<= 63), so keep cluster names well under that.
MAX_CLUSTER_NAME = 47


def check_cluster_name(value: str, *, field: str = "name") -> str:
    """Validate a cluster name; raise ValueError naming the field, value and fix."""
    if len(value) > MAX_CLUSTER_NAME:
        raise ValueError(f"{field} {value!r} is {len(value)} characters; use at most {MAX_CLUSTER_NAME}")
    if not DNS1035_LABEL.match(value):
        raise ValueError(
            f"{field} {value!r} is not a valid cluster name; use lowercase letters, digits and '-', "
            "starting with a letter and ending with a letter or digit (RFC 1035), e.g. 'ranking-train'"
        )
    return value


def check_namespace(value: str, *, field: str = "namespace") -> str:
    """Validate a namespace (DNS-1123 label, <= 63)."""
    if len(value) > 63 or not DNS1123_LABEL.match(value):
        raise ValueError(
            f"{field} {value!r} is not a valid namespace; use <= 63 lowercase letters, digits and '-' (RFC 1123)"
        )
    return value


def check_subdomain(value: str, *, field: str) -> str:
    """Validate a DNS-1123 subdomain (service accounts, priority classes)."""
    if len(value) > 253 or not _DNS1123_SUBDOMAIN.match(value):
        raise ValueError(f"{field} {value!r} is not a valid name; use lowercase letters, digits, '-' and '.'")
    return value


def check_label_value(value: str, *, field: str) -> str:
    """Validate a label value (<= 63, alphanumerics with `-_.` inside)."""
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        raise ValueError(
            f"{field} {value!r} cannot be a Kubernetes label value; use <= 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return value


def check_label_key(key: str, *, field: str) -> str:
    """Validate a label/annotation key (`[prefix/]name`)."""
    prefix, _, name = key.rpartition("/")
    if (
        (prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)))
        or len(name) > 63
        or not (_LABEL_NAME.match(name))
    ):
        raise ValueError(
            f"{field} key {key!r} is not a valid Kubernetes key; use '[dns.prefix/]name' with a name of <= 63 "
            "letters, digits, '-', '_' or '.'"
        )
    return key


def sanitize_label_value(value: str) -> str:
    """Turn any string (e.g. a user name `jane.doe@corp`) into a valid label value."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", value)[:63].strip("-_.")
    return cleaned or "unknown"
