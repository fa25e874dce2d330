"""The scenario of a create whose answers are lost, run against any API server behind the faulty proxy:
each kind of object's answer lost once, every answer lost, and a name someone else holds."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from discord_ml.cluster.kuberay.manifests import build_ray_cluster
from discord_ml.cluster.kuberay.provider import GROUP, PLURAL, VERSION, KubeRayProvider
from discord_ml.cluster.provider import ClusterError, ClusterExistsError
from discord_ml.cluster.spec import ClusterSpec
from discord_ml_tests.support.faulty_proxy import LoseAnswers

KINDS = ("secrets", "rayclusters", "networkpolicies")


def _spec(name: str) -> ClusterSpec:
    return ClusterSpec.build(name=name, namespace="ml", owner="alice", team="ml", workers=1)


def check_creates_survive_lost_answers(
    provider: KubeRayProvider, rules: list[LoseAnswers], names: Callable[[str], list[str]], direct: KubeRayProvider
) -> None:
    """`provider` goes through the proxy whose `rules` we set; `names(plural)` lists what exists in `ml`
    (straight from the API server); `direct` is a provider that bypasses the proxy."""

    def ours(prefix: str) -> dict[str, list[str]]:
        return {kind: [n for n in names(kind) if n.startswith(prefix)] for kind in KINDS}

    for kind in KINDS:  # one answer lost, after the API server wrote the object: exactly one cluster
        rules[:] = [LoseAnswers("POST", rf"/{kind}$")]
        provider.create(_spec(f"lost-{kind[:3]}"))
        assert rules[0].seen, f"no {kind} answer was lost"
        assert ours(f"lost-{kind[:3]}") == {
            "secrets": [f"lost-{kind[:3]}-ray-token"],
            "rayclusters": [f"lost-{kind[:3]}"],
            "networkpolicies": [f"lost-{kind[:3]}-ray"],
        }
        provider.delete(f"lost-{kind[:3]}", namespace="ml")
    rules[:] = [LoseAnswers("POST", r"/rayclusters$", times=-1)]  # every answer lost: a clear error, nothing left
    with pytest.raises(ClusterError, match=r"\(503\): upstream answer lost"):
        provider.create(_spec("lost-all"))
    assert ours("lost-all") == {kind: [] for kind in KINDS}
    rules.clear()
    # A name someone else holds: refused, theirs untouched, nothing of ours left.
    theirs = direct.call(
        direct.custom.create_namespaced_custom_object, GROUP, VERSION, "ml", PLURAL, build_ray_cluster(_spec("taken"))
    )
    try:
        with pytest.raises(ClusterExistsError, match=r"RayCluster 'taken' already exists .* not this create's"):
            provider.create(_spec("taken"))
        still = direct.call(direct.custom.get_namespaced_custom_object, GROUP, VERSION, "ml", PLURAL, "taken")
        assert still["metadata"]["uid"] == theirs["metadata"]["uid"]
        assert ours("taken") == {"secrets": [], "rayclusters": ["taken"], "networkpolicies": []}
    finally:
        direct.call(direct.custom.delete_namespaced_custom_object, GROUP, VERSION, "ml", PLURAL, "taken")
