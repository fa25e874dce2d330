"""Choosing a backend by name: the one place that maps `local` / `kuberay` to a provider."""

from __future__ import annotations

from discord_ml.cluster.provider import ClusterProvider
from discord_ml.settings import get_settings

BACKENDS = ("local", "kuberay")


def default_backend() -> str:
    """The backend in force: DML_BACKEND, or `local`."""
    return get_settings().backend


def get_provider(backend: str | None = None) -> ClusterProvider:
    """The provider for `backend` (default: `default_backend()`).

    Raises:
        ValueError: an unknown backend name, listing the known ones.
    """
    name = backend or default_backend()
    if name == "local":
        from discord_ml.cluster.local.provider import LocalRayProvider

        return LocalRayProvider()
    if name == "kuberay":
        from discord_ml.cluster.kuberay.provider import DASHBOARD_ACCESS, KubeRayProvider

        access = get_settings().kuberay_dashboard
        for known in DASHBOARD_ACCESS:
            if access == known:
                return KubeRayProvider(dashboard_access=known)
        raise ValueError(f"DML_KUBERAY_DASHBOARD {access!r} is not known; use one of: {', '.join(DASHBOARD_ACCESS)}")
    raise ValueError(f"backend {name!r} is not known; use one of: {', '.join(BACKENDS)} (DML_BACKEND)")
