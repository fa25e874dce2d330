"""Bad run config fails before any cluster is created, with a message that names the field."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from discord_ml.cluster.local.provider import LocalRayProvider
from discord_ml.definitions import defs
from discord_ml.quests.assets import gate
from discord_ml.quests.lake import Lake
from discord_ml.quests.ml.world import generate
from discord_ml.quests.tasks.prep import prep_in_process
from discord_ml_tests.support.quests import START, tiny

PARTITION = "2026-11-03"


@pytest.fixture
def lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Lake:
    monkeypatch.setenv("DML_DATA_ROOT", str(tmp_path / "lake"))
    lake = Lake(str(tmp_path / "lake"))
    generate(lake, days=3, config=tiny())
    for i in range(3):
        prep_in_process(lake, START + dt.timedelta(days=i))
    return lake


@pytest.fixture
def created(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    names: list[str] = []
    monkeypatch.setattr(LocalRayProvider, "create", lambda self, spec: names.append(spec.cluster_name))
    return names


def _train(instance: dg.DagsterInstance, config: dict[str, Any]) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def("quests_retrain")
    return job.execute_in_process(instance=instance, partition_key=PARTITION, raise_on_error=False,
                                  run_config={"ops": {"ranking_model": {"config": config}}})  # fmt: skip


def _failure(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(e.step_failure_data.error.to_string() for e in result.all_events
                     if e.event_type == dg.DagsterEventType.STEP_FAILURE and e.step_failure_data.error)  # fmt: skip


@pytest.mark.parametrize(("field", "value"), [("model_name", "gbdt"), ("gpu_pool", "h200")])
def test_enums_are_rejected_at_launch(
    dagster_instance: dg.DagsterInstance, created: list[str], field: str, value: str
) -> None:
    with pytest.raises(dg.DagsterInvalidConfigError) as error:
        _train(dagster_instance, {field: value})
    assert f"ranking_model:config:{field} not in enum type" in str(error.value) and value in str(error.value)
    assert created == []


@pytest.mark.parametrize(("config", "message"), [
    ({"data_window": 1}, "data_window"),
    ({"epochs": 3, "fail_once_at_epoch": 3}, "fail_once_at_epoch 3 must be after the first checkpoint and before "
                                             "the end: 1..2 for epochs=3"),
    ({"data_window": 5}, "data_window 5 ending 2026-11-03 needs features for 2026-10-30, 2026-10-31, which do not "
                         "exist; materialize quest_features for those partitions or lower data_window"),
    ({"workers": 40, "data_window": 3}, "gpu_pool/workers: invalid cluster spec: workers 40 exceeds the cpu pool's"),
])  # fmt: skip
def test_bad_values_fail_the_step_before_a_cluster_exists(
    dagster_instance: dg.DagsterInstance, lake: Lake, created: list[str], config: dict[str, Any], message: str
) -> None:
    result = _train(dagster_instance, config)
    assert not result.success
    assert message in _failure(result)
    assert created == []


def test_prep_of_a_day_that_has_not_landed_creates_no_cluster(
    dagster_instance: dg.DagsterInstance, lake: Lake, created: list[str]
) -> None:
    result = defs.resolve_job_def("quests_prep").execute_in_process(
        instance=dagster_instance, partition_key="2026-11-09", raise_on_error=False
    )
    assert not result.success
    assert "impressions for 2026-11-09 have not landed" in _failure(result)
    assert created == []


def _row(model: str, ep: float, auc: float) -> dict[str, Any]:
    return {"model": model, "expected_participation": ep, "auc": auc}


def test_gate_requires_beating_baseline_and_production() -> None:
    passed, why = gate({"candidate": _row("dlrm/v2", 0.40, 0.78), "xgboost": _row("xgboost/v1", 0.35, 0.74),
                        "production": _row("dlrm/v1", 0.39, 0.77)})  # fmt: skip
    assert passed and why == "beats xgboost/v1 and dlrm/v1"
    passed, why = gate({"candidate": _row("dlrm/v2", 0.34, 0.73), "xgboost": _row("xgboost/v1", 0.35, 0.74)})
    assert not passed
    assert "expected participation 0.3400 does not beat the XGBoost baseline's 0.3500" in why
    assert "AUC 0.7300 is below the XGBoost baseline's 0.7400" in why
    passed, why = gate({"candidate": _row("dlrm/v3", 0.40, 0.78), "xgboost": _row("xgboost/v1", 0.35, 0.74),
                        "production": _row("dlrm/v2", 0.41, 0.79)})  # fmt: skip
    assert not passed and "does not beat production dlrm/v2's 0.4100" in why
    # XGBoost as the candidate is its own baseline: only production must be beaten.
    assert gate({"candidate": _row("xgboost/v1", 0.35, 0.74), "xgboost": _row("xgboost/v1", 0.35, 0.74)})[0]
