"""Publishing is atomic: a failed write leaves the previous dataset (or nothing), never a half one."""

from __future__ import annotations

from pathlib import Path

import pytest

from discord_ml.quests.lake import Lake, LakeError, parse_date


def _write(lake: Lake, staging: str, name: str, text: str) -> None:
    with lake.filesystem.open_output_stream(f"{staging}/{name}") as out:
        out.write(text.encode())


def test_publish_replaces_whole_and_marks_complete(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    target = lake.path("features", "date=2026-11-01")
    with lake.publish(target) as staging:
        _write(lake, staging, "a.parquet", "v1")
        assert not lake.complete(target)
    assert lake.complete(target) and (Path(target) / "a.parquet").read_text() == "v1"
    with lake.publish(target) as staging:
        _write(lake, staging, "b.parquet", "v2")
    assert sorted(p.name for p in Path(target).iterdir()) == ["_SUCCESS", "b.parquet"]


def test_failed_publish_keeps_the_previous_version_and_no_staging(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    target = lake.path("features", "date=2026-11-01")
    with lake.publish(target) as staging:
        _write(lake, staging, "a.parquet", "v1")
    with pytest.raises(RuntimeError), lake.publish(target) as staging:
        _write(lake, staging, "a.parquet", "half")
        raise RuntimeError("writer died")
    assert (Path(target) / "a.parquet").read_text() == "v1" and lake.complete(target)
    assert [p.name for p in Path(target).parent.iterdir()] == ["date=2026-11-01"]


def test_publish_without_replace_refuses_an_existing_dataset(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    target = lake.path("registry", "dlrm", "v0001")
    with lake.publish(target, replace=False) as staging:
        _write(lake, staging, "card.json", "{}")
    with pytest.raises(LakeError, match="may not be replaced"), lake.publish(target, replace=False) as staging:
        _write(lake, staging, "card.json", "{}")


def test_url_roots_and_bad_dates(tmp_path: Path) -> None:
    lake = Lake(f"file://{tmp_path}")
    lake.write_json_atomic(lake.path("x", "y.json"), {"a": 1})
    assert lake.read_json(lake.path("x", "y.json")) == {"a": 1}
    with pytest.raises(LakeError, match="partition '2026-13-01' is not a date; use YYYY-MM-DD"):
        parse_date("2026-13-01", field="partition")
