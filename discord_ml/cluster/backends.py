"""Choosing a backend by name: the one place that maps `local` / `kuberay` to a provider."""

from __future__ import annotations

import os

from discord_ml.cluster.provider import ClusterError, ClusterProvider

BACKENDS = ("local", "kuberay")


def default_backend() -> str:
    """The backend in force: DML_BACKEND, or `local`."""
    return os.environ.get("DML_BACKEND", "local")


def get_provider(backend: str | None = None) -> ClusterProvider:
    """The provider for `backend` (default: `default_backend()`).

    Raises:
        ValueError: an unknown backend name, listing the known ones.
        ClusterError: a known backend that this installation cannot serve yet.
    """
    name = backend or default_backend()
    if name == "local":
        from discord_ml.cluster.local_provider import LocalRayProvider

        return LocalRayProvider()
    if name == "kuberay":
        raise ClusterError(
            "backend 'kuberay' is not available in this version yet (the KubeRay provider is being built); "
            "use backend 'local', or render manifests with `dml manifest` and apply them with kubectl"
        )
    raise ValueError(f"backend {name!r} is not known; use one of: {', '.join(BACKENDS)} (DML_BACKEND)")
