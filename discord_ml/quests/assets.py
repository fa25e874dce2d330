"""The quests ranking pipeline as daily-partitioned assets: prep → train → evaluate → promote →
batch inference. Each heavy step is a Ray job on the run's cluster; every step validates its
config and inputs first, so bad input fails before a cluster exists."""

import datetime as dt
from collections.abc import Mapping
from typing import Any

import dagster as dg
from pydantic import Field

from discord_ml.orchestration.resources import RayClusterResource
from discord_ml.quests.config import InferenceConfig, PrepConfig, TrainConfig
from discord_ml.quests.entrypoints import EvaluateArgs, InferenceArgs, PrepArgs, TrainArgs
from discord_ml.quests.lake import Lake, date_str, default_root, parse_date
from discord_ml.quests.model_registry import ModelRegistry, RegistryError, git_sha
from discord_ml.settings import get_settings

GROUP = "quests"
daily = dg.DailyPartitionsDefinition(start_date=get_settings().partitions_start, end_offset=1)
GATE = "beats_production_and_baseline"


class DataLakeResource(dg.ConfigurableResource):
    """Where the pipeline's data lives (landing, features, registry, recommendations)."""

    root: str | None = Field(default=None, description="Path or pyarrow/fsspec URL; default DML_DATA_ROOT.")

    def lake(self) -> Lake:
        return Lake(self.root or default_root())


def _fail(message: str) -> dg.Failure:
    return dg.Failure(description=message, allow_retries=False)


def _day(context: dg.AssetExecutionContext) -> dt.date:
    return parse_date(context.partition_key, field="partition")


def _job_env() -> dict[str, str]:
    return {"DML_GIT_SHA": git_sha()}


def _upstream(context: dg.AssetExecutionContext, key: str) -> dict[str, Any]:
    """Metadata of the latest materialization of `key` for this partition."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[context.partition_key]), limit=1
    ).records
    materialization = records[0].asset_materialization if records else None
    if materialization is None:
        raise _fail(f"{key} has no materialization for partition {context.partition_key}; materialize it first")
    return _values(materialization.metadata)


def _values(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """Plain values of materialization metadata (MetadataValue wrappers removed)."""
    return {k: getattr(v, "value", v) for k, v in (metadata or {}).items()}


def _results(results: list[Any]) -> dg.MaterializeResult:
    [result] = [r for r in results if isinstance(r, dg.MaterializeResult)]
    return result


raw_impressions = dg.AssetSpec(
    "raw_impressions",
    group_name=GROUP,
    partitions_def=daily,
    kinds={"parquet"},
    description="Impressions landed by the upstream system under landing/impressions/date=…; a day is "
    "complete when its _SUCCESS marker exists. Read-only for this pipeline.",
)


def daily_asset(**kwargs: Any) -> Any:
    """`dg.asset` for a step of the pipeline: in the quests group, partitioned by day."""
    return dg.asset(group_name=GROUP, partitions_def=daily, **kwargs)


@daily_asset(
    deps=[raw_impressions],
    kinds={"ray", "parquet"},
    backfill_policy=dg.BackfillPolicy.single_run(),  # a range of days preps in one run, on one cluster
    check_specs=[
        dg.AssetCheckSpec(
            "quarantine_share", asset="quest_features", description="Quarantined rows stay a small share of the day."
        )
    ],
    description="Validated, feature-engineered impressions of the day (Ray Data); bad rows and files quarantined.",
)
def quest_features(
    context: dg.AssetExecutionContext, config: PrepConfig, ray_cluster: RayClusterResource, data: DataLakeResource
) -> Any:
    lake = data.lake()
    days = [parse_date(key, field="partition") for key in context.partition_keys]
    missing = [date_str(d) for d in days if not lake.complete(lake.impressions_dir(d))]
    if missing:
        raise _fail(f"impressions for {', '.join(missing)} have not landed (no _SUCCESS marker under "
                    f"{lake.path('landing', 'impressions')}); wait for the upstream export or generate data with "
                    "`dml data generate`")  # fmt: skip
    command = PrepArgs(root=lake.root, date=[date_str(d) for d in days]).command()
    result = _results(ray_cluster.run_job(context, command, env=_job_env()))
    yield result
    meta = _values(result.metadata)
    share = float(meta["rows_quarantined"]) / max(float(meta["rows_in"]), 1.0)
    yield dg.AssetCheckResult(
        check_name="quarantine_share",
        passed=share <= config.max_quarantine_share and int(meta["files_quarantined"]) == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"share": share, "files_quarantined": int(meta["files_quarantined"])},
    )


def check_train_inputs(lake: Lake, day: dt.date, config: TrainConfig) -> None:
    """Every day of the window has features; raises a Failure naming `data_window` otherwise."""
    missing = [date_str(d) for d in lake.missing_features(day, config.data_window)]
    if missing:
        raise _fail(
            f"data_window {config.data_window} ending {date_str(day)} needs features for "
            f"{', '.join(missing)}, which do not exist; materialize quest_features for those partitions "
            "or lower data_window"
        )


@daily_asset(deps=[quest_features], kinds={"ray", "pytorch"},
             description="A ranking model trained on the window ending at the partition (Ray Train TorchTrainer, "
             "TorchRec model-parallel embeddings; or xgboost), registered as a new immutable version.")  # fmt: skip
def ranking_model(
    context: dg.AssetExecutionContext, config: TrainConfig, ray_cluster: RayClusterResource, data: DataLakeResource
) -> Any:
    lake, day = data.lake(), _day(context)
    check_train_inputs(lake, day, config)
    pool = str(config.gpu_pool)
    # Sizing errors (pool unknown to this deployment, too many workers) surface before any cluster exists.
    try:
        ray_cluster.cluster_spec(
            run_id=context.run.run_id, job_name=context.run.job_name, gpu_pool=pool, workers=config.workers
        )
    except ValueError as exc:
        raise _fail(f"gpu_pool/workers: {exc}") from None
    args = TrainArgs(root=lake.root, date=date_str(day), window=config.data_window, model=str(config.model_name),
                     workers=config.workers, epochs=config.epochs, batch_size=config.batch_size,
                     learning_rate=config.learning_rate, sparse_learning_rate=config.sparse_learning_rate,
                     embedding_dim=config.embedding_dim, run_id=context.run.run_id,
                     fail_once_at_epoch=config.fail_once_at_epoch)  # fmt: skip
    yield _results(
        ray_cluster.run_job(
            context,
            args.command(),
            env=_job_env(),
            gpu_pool=pool,
            workers=config.workers,
        )
    )


def gate(table: dict[str, dict[str, Any]]) -> tuple[bool, str]:
    """Promotion rule: strictly better expected participation than the XGBoost baseline (unless the
    candidate is that baseline) and than the production model, and no worse AUC than the baseline."""
    candidate, reasons = table["candidate"], []
    baseline = table["xgboost"]
    if baseline["model"] != candidate["model"]:
        if candidate["expected_participation"] <= baseline["expected_participation"]:
            reasons.append(
                f"expected participation {candidate['expected_participation']:.4f} does not beat the "
                f"XGBoost baseline's {baseline['expected_participation']:.4f}"
            )
        if candidate["auc"] < baseline["auc"]:
            reasons.append(f"AUC {candidate['auc']:.4f} is below the XGBoost baseline's {baseline['auc']:.4f}")
    production = table.get("production")
    if production and candidate["expected_participation"] <= production["expected_participation"]:
        reasons.append(
            f"expected participation {candidate['expected_participation']:.4f} does not beat production "
            f"{production['model']}'s {production['expected_participation']:.4f}"
        )
    if reasons:
        return False, "; ".join(reasons)
    beaten = [t["model"] for t in (baseline, production) if t and t["model"] != candidate["model"]]
    if not beaten:
        return True, "nothing to beat: the candidate is the XGBoost baseline and there is no production model"
    return True, "beats " + " and ".join(beaten)


@daily_asset(
    deps=[ranking_model],
    kinds={"ray"},
    check_specs=[
        dg.AssetCheckSpec(
            GATE,
            asset="model_evaluation",
            blocking=True,
            description="The candidate beats the production model and the XGBoost baseline "
            "on expected participation (blocks promotion otherwise).",
        )
    ],
    description="The candidate vs the XGBoost baseline (same window), production, random and the oracle on the "
    "validation day (the gate) and the test day (the report): AUC, log loss, calibration, expected participation, "
    "coverage; ROC and calibration plots.",
)
def model_evaluation(context: dg.AssetExecutionContext, ray_cluster: RayClusterResource, data: DataLakeResource) -> Any:
    lake = data.lake()
    candidate = str(_upstream(context, "ranking_model")["model_version"])
    try:
        ModelRegistry(lake).get(candidate)
    except RegistryError as exc:
        raise _fail(str(exc)) from None
    result = _results(
        ray_cluster.run_job(
            context,
            EvaluateArgs(root=lake.root, candidate=candidate).command(),
            env=_job_env(),
        )
    )
    yield result
    passed, why = gate(_values(result.metadata)["validation_table_json"])  # tuned on validation; test only reported
    context.log.info(f"promotion gate for {candidate}: {'passed' if passed else 'failed'}: {why}")
    yield dg.AssetCheckResult(
        check_name=GATE,
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"candidate": candidate, "reason": why},
    )


@daily_asset(
    deps=[model_evaluation],
    kinds={"python"},
    description="Promotes the evaluated candidate to production (only reached when the gate check passed).",
)
def production_model(context: dg.AssetExecutionContext, data: DataLakeResource) -> dg.MaterializeResult:
    lake = data.lake()
    registry = ModelRegistry(lake)
    evaluation = _upstream(context, "model_evaluation")
    candidate = registry.get(str(evaluation["candidate"]))
    previous = registry.production()
    entry = registry.promote(
        candidate, reason=f"passed {GATE} on {evaluation['validation_day']}", run_id=context.run.run_id
    )
    context.log.info(f"production model is now {candidate.ref} (was {previous.ref if previous else 'none'})")
    return dg.MaterializeResult(
        metadata={
            "production": candidate.ref,
            "previous": previous.ref if previous else "none",
            "promoted_at": entry["promoted_at"],
            "expected_participation": float(evaluation.get("candidate_expected_participation", float("nan"))),
        }
    )


@daily_asset(deps=[production_model], kinds={"ray", "parquet"},
             description="Top-K quests for every request of the next day, scored by the production model with Ray "
             "Data map_batches over an actor pool.")  # fmt: skip
def quest_recommendations(
    context: dg.AssetExecutionContext,
    config: InferenceConfig,
    ray_cluster: RayClusterResource,
    data: DataLakeResource,
) -> Any:
    lake = data.lake()
    serving = _day(context) + dt.timedelta(days=1)
    if not lake.files(lake.requests_dir(serving)):
        raise _fail(f"no serving requests for {date_str(serving)} in {lake.requests_dir(serving)}")
    if ModelRegistry(lake).production() is None:
        raise _fail("there is no production model yet; materialize production_model first")
    command = InferenceArgs(root=lake.root, date=date_str(serving), top_k=config.top_k, actors=config.actors).command()
    yield _results(ray_cluster.run_job(context, command, env=_job_env()))


QUESTS_ASSETS = [quest_features, ranking_model, model_evaluation, production_model, quest_recommendations]

quests_prep_job = dg.define_asset_job(
    "quests_prep",
    selection=[quest_features],
    executor_def=dg.in_process_executor,
    description="Prep one landed day: validate, quarantine, featurize (Ray Data).",
)
quests_retrain_job = dg.define_asset_job(
    "quests_retrain",
    selection=[ranking_model, model_evaluation, production_model, quest_recommendations],
    executor_def=dg.in_process_executor,
    description="Train on the window ending at the partition, evaluate, promote if it passes, score tomorrow.",
)
quests_daily_job = dg.define_asset_job(
    "quests_daily",
    selection=QUESTS_ASSETS,
    executor_def=dg.in_process_executor,
    description="The whole day: prep the partition, then retrain, evaluate, promote and score.",
)
