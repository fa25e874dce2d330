"""The quests pipeline through real Dagster runs on real local Ray clusters: sensor → prep → train
(TorchRec model-parallel tables over 2 workers) → evaluate → promote → batch inference; bad data; a killed worker."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from discord_ml.cluster.local.nodes import LocalRayCluster
from discord_ml.cluster.local.provider import LocalRayProvider
from discord_ml.definitions import defs
from discord_ml.jobs.client import RayJobs
from discord_ml.quests.assets import DataLakeResource
from discord_ml.quests.automation import RANGE_END, RANGE_START, landed_impressions_sensor
from discord_ml.quests.entrypoints import TrainArgs
from discord_ml.quests.lake import Lake
from discord_ml.quests.ml.features import CATEGORICAL, REASON, FeatureSpec, featurize, split_valid
from discord_ml.quests.ml.world import WorldConfig, generate
from discord_ml.quests.model_registry import ModelRegistry
from discord_ml.quests.tasks.prep import prep_in_process
from discord_ml_tests.support.quests import DEMO_WORLD, START, tiny

pytestmark = pytest.mark.e2e


@pytest.fixture
def lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Lake:
    root = tmp_path / "lake"
    monkeypatch.setenv("DML_DATA_ROOT", str(root))
    return Lake(str(root))


def _meta(result: dg.ExecuteInProcessResult, asset: str, partitions: int = 1) -> dict[str, Any]:
    materializations = result.asset_materializations_for_node(asset)
    assert len(materializations) == partitions  # one per partition, also when one run covers a range
    return {k: v.value for k, v in materializations[-1].metadata.items()}


def _tick(instance: dg.DagsterInstance, cursor: str | None) -> tuple[list[dg.RunRequest], str | None]:
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources={"data": DataLakeResource()}) as ctx:
        result = landed_impressions_sensor(ctx)
    if isinstance(result, dg.SkipReason):
        return [], cursor
    assert isinstance(result, dg.SensorResult)
    return [r for r in result.run_requests or [] if isinstance(r, dg.RunRequest)], result.cursor


def _digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_landed_days_flow_from_the_sensor_to_recommendations(dagster_instance: dg.DagsterInstance, lake: Lake) -> None:
    generate(lake, days=4, config=WorldConfig(**DEMO_WORLD))

    # 1. The sensor sees four landed days and asks for one prep run over them.
    [prep], cursor = _tick(dagster_instance, None)
    assert (prep.job_name, prep.tags[RANGE_START], prep.tags[RANGE_END]) == ("quests_prep", "2026-11-01", "2026-11-04")
    result = defs.resolve_job_def("quests_prep").execute_in_process(instance=dagster_instance, tags=prep.tags)
    assert result.success
    prepped = _meta(result, "quest_features", partitions=4)
    assert prepped["rows_in"] == 4 * DEMO_WORLD["impressions_per_day"]
    assert prepped["rows_valid"] + prepped["rows_quarantined"] == prepped["rows_in"] and prepped["rows_quarantined"] > 0
    assert all(lake.complete(lake.features_dir(START + dt.timedelta(days=i))) for i in range(4))

    # 2. With the window prepped, the next tick asks for the retrain of the newest day; then nothing.
    [retrain], cursor = _tick(dagster_instance, cursor)
    assert (retrain.job_name, retrain.partition_key) == ("quests_retrain", "2026-11-04")
    assert _tick(dagster_instance, cursor)[0] == []
    config = {"ops": {"ranking_model": {"config": {"epochs": 4, "workers": 2}}}}
    result = defs.resolve_job_def("quests_retrain").execute_in_process(
        instance=dagster_instance, partition_key=retrain.partition_key, run_config=config, tags=retrain.tags
    )
    assert result.success

    # Training: TorchRec's plan, as the run reports it. The user and quest tables each live whole on one of the
    # two workers (table-wise, balanced by the planner); the vocabularies are replicated on both.
    trained = _meta(result, "ranking_model")
    plan = {t["table"]: t for t in json.loads(trained["shard_plan"])}
    spec, dim = FeatureSpec(), 16
    [user], [quest] = plan["user_bucket"]["shards"], plan["quest_bucket"]["shards"]
    assert {plan[t]["sharding_type"] for t in ("user_bucket", "quest_bucket")} == {"table_wise"}
    assert (user["sizes"], quest["sizes"]) == ([spec.user_buckets, dim], [spec.quest_buckets, dim])
    assert sorted([user["rank"], quest["rank"]]) == [0, 1]
    assert {plan[name]["sharding_type"] for name in CATEGORICAL} == {"data_parallel"}
    held = {m["rank"]: m["sharded_table_bytes"] for m in json.loads(trained["memory_per_worker"])}
    assert held == {user["rank"]: spec.user_buckets * dim * 4, quest["rank"]: spec.quest_buckets * dim * 4}
    assert (trained["data_window"], trained["validation_day"], trained["holdout_day"]) == (
        "2026-11-01, 2026-11-02", "2026-11-03", "2026-11-04")  # fmt: skip
    version = ModelRegistry(lake).get(str(trained["model_version"]))
    assert version.card["training"]["epochs_run"] == [0, 1, 2, 3] and version.card["git_sha"]

    # Evaluation: the table covers every comparison, the gate passed, the candidate was promoted.
    evaluation = _meta(result, "model_evaluation")
    table = evaluation["table_json"]
    assert set(table) == {"candidate", "xgboost", "random", "oracle"}
    assert table["random"]["expected_participation"] < table["xgboost"]["expected_participation"]
    assert table["xgboost"]["expected_participation"] < table["candidate"]["expected_participation"]
    assert table["candidate"]["expected_participation"] <= table["oracle"]["expected_participation"]
    assert table["candidate"]["auc"] > table["xgboost"]["auc"] and table["candidate"]["coverage"] == 1.0
    assert evaluation["cold_start_requests"] > 0 and table["candidate"]["cold_start_coverage"] == 1.0
    assert "data:image/png;base64," in str(evaluation["plots"])
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "beats_production_and_baseline" and check.passed
    assert ModelRegistry(lake).production() == version

    # Batch inference: every request of the next day has its top 3, scored by the production model.
    inference = _meta(result, "quest_recommendations")
    assert inference["coverage"] == 1.0 and inference["model_version"] == version.ref
    recommendations = lake.read_table(lake.files(lake.recommendations_dir(dt.date(2026, 11, 5))))
    requests = lake.read_table(lake.files(lake.requests_dir(dt.date(2026, 11, 5))))
    assert set(recommendations["request_id"].to_pylist()) == set(requests["request_id"].to_pylist())
    assert recommendations.num_rows == 3 * DEMO_WORLD["requests_per_day"]
    assert np.unique(recommendations["rank"].to_numpy()).tolist() == [1, 2, 3]
    # No cluster outlives its run.
    assert LocalRayProvider().list() == []


def test_bad_files_and_rows_are_quarantined_and_the_raw_files_stay_byte_identical(
    dagster_instance: dg.DagsterInstance, lake: Lake
) -> None:
    generate(lake, days=1, config=tiny(bad_row_rate=0.0))
    landed = Path(lake.impressions_dir(START))
    good = lake.read_table(lake.files(str(landed)))
    (landed / "part-90000.parquet").write_bytes(b"PAR1 this is not parquet")
    pq.write_table(good.slice(0, 10).drop_columns(["label"]), landed / "part-90001.parquet")
    bad_rows = good.slice(0, 8).to_pylist()
    breakage = [("user_id", None), ("label", 3), ("position", 9), ("platform", "toaster"), ("account_age_days", -4)]
    for row, (column, value) in zip(bad_rows, breakage, strict=False):
        row[column] = value
    for i, row in enumerate(bad_rows):
        row["impression_id"] = 10**12 + i  # the 3 untouched rows are valid new impressions
    mixed = pa.Table.from_pylist(bad_rows, schema=good.schema)
    pq.write_table(mixed, landed / "part-90002.parquet")
    before = _digests(landed)

    result = defs.resolve_job_def("quests_prep").execute_in_process(
        instance=dagster_instance, partition_key=START.isoformat()
    )
    assert result.success
    meta = _meta(result, "quest_features")
    assert (meta["files"], meta["files_quarantined"], meta["rows_quarantined"]) == (5, 2, 5)
    assert meta["quarantine_reasons"] == {
        "user_id is null": 1, "label not in 0|1": 1, "position outside 1..5": 1,
        "platform not in desktop|mobile|console|web": 1, "account_age_days < 0": 1,
        "file: missing column(s) label": 1,
        "file: not a readable Parquet file: " + _parquet_error(landed / "part-90000.parquet"): 1,
    }  # fmt: skip
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "quarantine_share" and not check.passed  # a warning: files were quarantined

    # Features are exactly those of the valid rows; the quarantine holds the rest with reasons.
    valid, _ = split_valid(pa.concat_tables([good, mixed]))
    expected = featurize(valid, FeatureSpec()).sort_by("impression_id")
    actual = (
        lake.read_table(lake.files(lake.features_dir(START))).select(expected.column_names).sort_by("impression_id")
    )
    assert actual.num_rows == good.num_rows + 3 and actual.equals(expected.cast(actual.schema))
    quarantine = Path(lake.quarantine_dir(START))
    rows = pq.read_table(quarantine / "rows.parquet")
    reasons = [str(r) for r in rows[REASON].to_pylist()]
    assert sorted(reasons) == sorted(k for k in meta["quarantine_reasons"] if not k.startswith("file"))
    assert sorted(p.name for p in (quarantine / "files").iterdir()) == ["part-90000.parquet", "part-90001.parquet"]
    # Raw data untouched, byte for byte, and nothing added beside it.
    assert _digests(landed) == before


def _parquet_error(path: Path) -> str:
    try:
        pq.ParquetFile(path)
    except Exception as exc:  # the exact text pyarrow gives for this file
        return str(exc)
    raise AssertionError("expected a parquet error")


def test_a_killed_worker_resumes_from_its_last_checkpoint(local_cluster: LocalRayCluster, lake: Lake) -> None:
    generate(lake, days=3, config=tiny(impressions_per_day=8000))
    for i in range(3):
        prep_in_process(lake, START + dt.timedelta(days=i))
    lines: list[str] = []
    entrypoint = TrainArgs(
        root=lake.root, date="2026-11-03", window=3, epochs=3, workers=2, fail_once_at_epoch=1, run_id="fault-drill"
    ).command()
    headers = local_cluster.auth_headers()
    outcome = RayJobs(local_cluster.dashboard_url, headers=headers).submit_and_follow(
        entrypoint=entrypoint, on_line=lines.append
    )
    assert outcome.status == "SUCCEEDED"
    assert any("fault drill: killing worker rank 1" in line for line in lines)
    assert Path(lake.run_storage("fault-drill"), "fault-drill.marker").exists()
    training = ModelRegistry(lake).get("dlrm/v0001").card["training"]
    assert training["resumed_at_epoch"] == [1]  # from the checkpoint of epoch 0
    assert training["epochs_run"] == [0, 1, 2] and training["history"][-1]["epoch"] == 2
    assert training["metrics"]["epoch"] == training["best_epoch"]  # the registered model is the best epoch
    assert np.isfinite(training["metrics"]["valid_auc"])


def test_two_workers_learn_what_one_worker_learns(local_cluster: LocalRayCluster, lake: Lake) -> None:
    """Model-parallel tables change where the rows live, not what is learned: on the same data, 2 workers
    reach the validation AUC of 1 worker with the same global batch (each worker steps on half of its rows)."""
    generate(lake, days=4, config=tiny(impressions_per_day=30_000))
    for i in range(4):
        prep_in_process(lake, START + dt.timedelta(days=i))
    auc = {}
    for workers in (1, 2):
        entrypoint = TrainArgs(
            root=lake.root,
            date="2026-11-04",
            window=4,
            epochs=3,
            workers=workers,
            batch_size=1024 // workers,
            run_id=f"w{workers}",
        ).command()
        jobs = RayJobs(local_cluster.dashboard_url, headers=local_cluster.auth_headers())
        outcome = jobs.submit_and_follow(entrypoint=entrypoint)
        assert outcome.status == "SUCCEEDED"
        training = ModelRegistry(lake).latest("dlrm")
        assert training is not None and training.card["training"]["world"] == workers
        auc[workers] = training.card["training"]["metrics"]["valid_auc"]
    assert auc[1] > 0.6, auc  # it learned something
    assert abs(auc[2] - auc[1]) < 0.01, auc
