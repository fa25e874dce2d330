"""The model registry: numbered immutable versions, a production pointer with history."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from discord_ml.quests.lake import Lake
from discord_ml.quests.model_registry import ModelRegistry, RegistryError


def test_versions_are_new_each_time_and_never_overwritten(tmp_path: Path) -> None:
    registry = ModelRegistry(Lake(str(tmp_path)))
    first = registry.register("dlrm", {"model.pt": b"one"}, {"data_window": ["2026-11-01"]})
    second = registry.register("dlrm", {"model.pt": b"two"}, {"data_window": ["2026-11-02"]})
    assert (first.ref, second.ref) == ("dlrm/v0001", "dlrm/v0002")
    assert (Path(first.path) / "model.pt").read_bytes() == b"one"
    card = registry.get("dlrm/v0001").card
    assert card["version"] == 1 and card["git_sha"] and card["registered_at"]
    assert registry.find("dlrm", data_window=["2026-11-02"]) == registry.get("dlrm/v0002")
    assert registry.latest("dcn_v2") is None


def test_concurrent_registrations_get_distinct_versions(tmp_path: Path) -> None:
    registry = ModelRegistry(Lake(str(tmp_path)))
    refs: list[str] = []
    threads = [threading.Thread(target=lambda i=i: refs.append(registry.register("xgboost", {"m": bytes([i])}, {}).ref))
               for i in range(6)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(refs) == [f"xgboost/v{i:04d}" for i in range(1, 7)]
    assert sorted((Path(registry.get(r).path) / "m").read_bytes() for r in refs) == [bytes([i]) for i in range(6)]


def test_production_pointer_keeps_history(tmp_path: Path) -> None:
    registry = ModelRegistry(Lake(str(tmp_path)))
    assert registry.production() is None
    a = registry.register("dlrm", {}, {})
    b = registry.register("dcn_v2", {}, {})
    registry.promote(a, reason="first")
    registry.promote(b, reason="better")
    assert registry.production() == b
    state = registry.lake.read_json(f"{registry.lake.registry_dir()}/production.json")
    assert [h["ref"] for h in state["history"]] == ["dlrm/v0001", "dcn_v2/v0001"]


def test_unknown_versions_say_what_exists(tmp_path: Path) -> None:
    registry = ModelRegistry(Lake(str(tmp_path)))
    registry.register("dlrm", {}, {})
    with pytest.raises(RegistryError, match="dlrm/v0007 is not registered; registered dlrm versions: dlrm/v0001"):
        registry.get("dlrm/v0007")
    with pytest.raises(RegistryError, match="not of the form"):
        registry.get("dlrm-7")
