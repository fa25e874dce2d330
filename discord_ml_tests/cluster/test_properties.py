"""Property-based: any valid spec yields manifests valid against the CRDs, the Kubernetes schemas
and the security rules; any input at all yields a spec or a SpecError, nothing else."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from discord_ml.cluster.kuberay.manifests import build_network_policy, build_ray_cluster, build_ray_job
from discord_ml.cluster.kuberay.security import validate_manifest
from discord_ml.cluster.pools import GpuPool, load_catalog
from discord_ml.cluster.spec import ClusterSpec, Purpose, SpecError
from discord_ml_tests.support.schemas import crd_errors, k8s_errors, pod_errors

CATALOG = load_catalog()
LABEL = st.from_regex(r"[a-z0-9]([a-z0-9._-]{0,20}[a-z0-9])?", fullmatch=True)
ENV_NAME = st.from_regex(r"[A-Z_][A-Z0-9_]{0,15}", fullmatch=True).filter(lambda s: not s.startswith("RAY_AUTH_"))


@st.composite
def valid_specs(draw: st.DrawFn) -> dict[str, Any]:
    pool: GpuPool = draw(st.sampled_from(CATALOG.pools))
    fields: dict[str, Any] = {
        "owner": draw(LABEL),
        "team": draw(LABEL),
        "purpose": draw(st.sampled_from(list(Purpose))),
        "gpu_pool": pool.name,
        "ttl": f"{draw(st.integers(10, 7 * 24 * 60))}m",
        "labels": draw(st.dictionaries(st.from_regex(r"team\.example/[a-z]{1,10}", fullmatch=True), LABEL, max_size=3)),
        "env": draw(st.dictionaries(ENV_NAME, st.text(max_size=20), max_size=3)),
        "name": draw(st.none() | st.from_regex(r"[a-z]([a-z0-9-]{0,40}[a-z0-9])?", fullmatch=True)),
    }
    if pool.has_gpus:
        fields["gpus_per_worker"] = draw(st.integers(1, pool.gpus_per_node))
    if draw(st.booleans()):
        low = draw(st.integers(0, pool.max_workers))
        fields["min_workers"], fields["max_workers"] = low, draw(st.integers(max(low, 1), pool.max_workers))
    else:
        fields["workers"] = draw(st.integers(0, pool.max_workers))
    if draw(st.booleans()):
        fields["worker_cpu"] = draw(
            st.sampled_from([str(draw(st.integers(1, int(pool.node_cpu)))), f"{draw(st.integers(100, 999))}m"])
        )
    if draw(st.booleans()):
        fields["worker_memory"] = f"{draw(st.integers(512, int(pool.node_memory) // 2**20))}Mi"
    if draw(st.booleans()):
        fields["service_account"] = draw(st.from_regex(r"[a-z]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True))
    return fields


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_specs())
def test_any_valid_spec_yields_valid_manifests(fields: dict[str, Any]) -> None:
    spec = ClusterSpec.build(**fields)
    cluster = build_ray_cluster(spec)
    job = build_ray_job(spec, "python -m discord_ml.orchestration.smoke")
    for manifest in (cluster, job):
        assert crd_errors(manifest) == []
        assert pod_errors(manifest) == []
        assert validate_manifest(manifest) == []
    assert k8s_errors(build_network_policy(spec, platform_namespace="ml-platform")) == []
    group = cluster["spec"]["workerGroupSpecs"][0]
    assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


JUNK = st.one_of(st.none(), st.integers(-5, 10**6), st.text(max_size=12), st.booleans(), st.floats(allow_nan=True))


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["name", "gpu_pool", "workers", "worker_memory", "worker_cpu", "ttl", "owner", "image", "gpus_per_worker",
             "min_workers", "max_workers", "namespace", "purpose", "head_memory"]
        ),
        JUNK,
        max_size=4,
    )
)  # fmt: skip
def test_any_input_gives_a_spec_or_a_spec_error(fields: dict[str, Any]) -> None:
    try:
        spec = ClusterSpec.build(**{"owner": "jane", **fields})
    except SpecError as exc:
        assert str(exc).startswith("invalid cluster spec: ")
        return
    assert validate_manifest(build_ray_cluster(spec)) == []
