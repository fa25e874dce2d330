"""The GPU pool catalog: the packaged default, deployment overrides, shorthand, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from discord_ml.cluster.pools import PoolError, get_catalog, load_catalog, parse_catalog


def test_packaged_catalog_offers_the_standard_pools() -> None:
    catalog = load_catalog()
    assert catalog.names == ["cpu", "t4", "l4", "a100", "h100"]
    h100 = catalog.get("h100")
    assert (h100.accelerator, h100.resource_key, h100.gpus_per_node) == ("nvidia-h100-80gb", "nvidia.com/gpu", 8)
    assert h100.tolerations[0].to_k8s() == {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    assert not catalog.get("cpu").has_gpus


@pytest.mark.parametrize(("text", "pool", "gpus"), [("h100", "h100", None), ("H100:8", "h100", 8), ("t4:1", "t4", 1)])
def test_shorthand(text: str, pool: str, gpus: int | None) -> None:
    resolved, count = load_catalog().resolve(text)
    assert (resolved.name, count) == (pool, gpus)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("h200", "gpu_pool 'h200' is not defined; known pools: cpu, t4, l4, a100, h100 (see `dml pools`)"),
        ("h100:9", "one h100 node has 8 GPUs; ask for at most 'h100:8'"),
        ("h100:x", "must be a whole number >= 1, e.g. 'h100:8'"),
        ("h100:0", "must be a whole number >= 1"),
        ("cpu:2", "pool 'cpu' has no GPUs; use 'cpu' without a count"),
    ],
)
def test_bad_shorthand(text: str, message: str) -> None:
    with pytest.raises(PoolError) as exc:
        load_catalog().resolve(text)
    assert message in str(exc.value)


def test_deployment_file_replaces_the_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "pools.yaml"
    path.write_text(
        "pools:\n"
        "  - {name: mi300, accelerator: amd-mi300x, resource_key: amd.com/gpu, gpus_per_node: 8,\n"
        "     cpu_per_node: '190', memory_per_node: 1800Gi, max_workers: 4}\n"
    )
    monkeypatch.setenv("DML_POOLS_FILE", str(path))
    get_catalog.cache_clear()
    try:
        assert get_catalog().names == ["mi300"]
        assert get_catalog().source == str(path)
    finally:
        monkeypatch.delenv("DML_POOLS_FILE")
        get_catalog.cache_clear()
    assert "cpu" in get_catalog().names


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("pools: [{name: a, cpu_per_node: '4', memory_per_node: 8Gi}]", "pools.0.max_workers: Field required"),
        ("pools: [{name: a, cpu_per_node: '4', memory_per_node: 8GB, max_workers: 1}]", "memory_per_node"),
        ("pools: [{name: a, gpus_per_node: 2, cpu_per_node: '4', memory_per_node: 8Gi, max_workers: 1}]",
         "accelerator, resource_key and gpus_per_node > 0 go together"),
        ("pools: [{name: A_B, cpu_per_node: '4', memory_per_node: 8Gi, max_workers: 1}]", "must be lowercase"),
        ("pools: [{name: a, cpu_per_node: '4', memory_per_node: 8Gi, max_workers: 1},"
         " {name: a, cpu_per_node: '4', memory_per_node: 8Gi, max_workers: 1}]", "repeated: a"),
        ("pools: []", "defines no pools"),
        ("just text", "expected a mapping with a 'pools' list"),
        ("pools: [unclosed", "not valid YAML"),
    ],
)  # fmt: skip
def test_bad_catalog_files_name_the_file_and_field(yaml_text: str, message: str) -> None:
    with pytest.raises(PoolError) as exc:
        parse_catalog(yaml_text, source="team-pools.yaml")
    assert str(exc.value).startswith("pool catalog team-pools.yaml:")
    assert message in str(exc.value)


def test_missing_catalog_file_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(PoolError, match="does not exist; fix DML_POOLS_FILE"):
        load_catalog(tmp_path / "nope.yaml")
