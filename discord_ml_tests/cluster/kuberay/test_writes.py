"""A create whose answers are lost ends with exactly one cluster of ours, or none and a clear error, and
never touches someone else's: the emulator behind the faulty proxy (the kube tier repeats it against the
real API server)."""

from __future__ import annotations

from pathlib import Path

from discord_ml.cluster.kuberay.provider import KubeRayProvider
from discord_ml.cluster.kuberay.writes import ATTEMPT_ANNOTATION, attempt_of
from discord_ml_tests.support.faulty_proxy import faulty_proxy
from discord_ml_tests.support.k8s_emulator import serve
from discord_ml_tests.support.lost_answers import check_creates_survive_lost_answers
from discord_ml_tests.support.schemas import require_crds


def test_attempt_marks_are_read_from_dicts_and_models() -> None:
    from kubernetes.client import V1ObjectMeta, V1Secret

    assert attempt_of({"metadata": {"annotations": {ATTEMPT_ANNOTATION: "a1"}}}) == "a1"
    assert attempt_of(V1Secret(metadata=V1ObjectMeta(annotations={ATTEMPT_ANNOTATION: "a2"}))) == "a2"
    assert attempt_of({"metadata": {}}) is None and attempt_of(V1Secret(metadata=V1ObjectMeta())) is None


def test_lost_answers_on_the_emulator(tmp_path: Path) -> None:
    require_crds()
    with serve(tmp_path, mode="status") as (emulator, kubeconfig):
        proxied = tmp_path / "proxy.kubeconfig"
        with faulty_proxy(emulator.url, proxied) as rules:
            provider = KubeRayProvider(kubeconfig=str(proxied), dashboard_access="service-ip", backoff_s=0.01)
            direct = KubeRayProvider(kubeconfig=str(kubeconfig), dashboard_access="service-ip", backoff_s=0.01)
            names = lambda plural: sorted(o["metadata"]["name"] for o in emulator.find(plural, "ml"))  # noqa: E731
            check_creates_survive_lost_answers(provider, rules, names, direct)
