"""Ray job: train the model named by `--model` on a window of days and register it.

Neural models train with Ray Train's `TorchTrainer`: the window's features are read with Ray Data
and split into one equal shard per worker, the embedding tables are placed model-parallel on the
workers by TorchRec (`DistributedModelParallel`, `quests/ml/sharding.py`), every epoch is checkpointed to
the run's storage and a killed worker resumes from the last checkpoint (`FailureConfig`); the
epoch registered is the best on the validation day. `xgboost` trains the baseline in one Ray task.
The window's days are training days, then the validation day, then the test day, which only the
evaluation reads; per-epoch metrics reach Dagster through Pipes.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import ray
from dagster_pipes import open_dagster_pipes

from discord_ml.quests.entrypoints import TrainArgs
from discord_ml.quests.lake import Lake, LakeError, date_str, parse_date, window_days
from discord_ml.quests.ml.features import DENSE, SPARSE, FeatureSpec
from discord_ml.quests.ml.metrics import auc, log_loss
from discord_ml.quests.ml.models import ModelConfig
from discord_ml.quests.model_registry import ModelRegistry, ModelVersion
from discord_ml.quests.tasks.runtime import init_ray

FEATURE_COLUMNS = [*SPARSE, *DENSE, "label"]
DRILL_MARKER = "fault-drill.marker"


def split_window(end: dt.date, window: int) -> tuple[list[dt.date], dt.date, dt.date]:
    """(training days, validation day, test day) of the `window` days ending at `end`.

    Everything that is tuned (early stopping, the epoch kept, XGBoost's rounds, the promotion gate)
    looks at the validation day; the test day is only reported."""
    if window < 3:
        raise LakeError(f"data_window {window} is too short: it needs training days, a validation day and a test day")
    days = window_days(end, window)
    return days[:-2], days[-2], days[-1]


def feature_files(lake: Lake, days: list[dt.date]) -> list[str]:
    """The published feature files of `days`, in day order."""
    missing = [date_str(d) for d in days if not lake.complete(lake.features_dir(d))]
    if missing:
        raise LakeError(
            f"features missing for {', '.join(missing)}: run prep (quest_features) for those partitions "
            "or choose a smaller data_window"
        )
    return [f for d in days for f in lake.files(lake.features_dir(d))]


def read_table(lake: Lake, days: list[dt.date], columns: list[str] | None = FEATURE_COLUMNS) -> pa.Table:
    """The features of `days` as one table (only `columns`)."""
    return lake.read_table(feature_files(lake, days), columns)


# --- neural models ------------------------------------------------------------------------------


def _forward_progress(queue: Any, on_event: Callable[[dict[str, Any]], None], stop: threading.Event) -> None:
    from ray.util.queue import Empty

    while not stop.is_set() or not queue.empty():
        try:
            on_event(queue.get(timeout=0.5))
        except Empty:
            continue


def train_neural(
    lake: Lake,
    train: list[dt.date],
    validation: dt.date,
    *,
    model: ModelConfig,
    workers: int,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    sparse_learning_rate: float,
    use_gpu: bool,
    run_id: str,
    fail_once_at_epoch: int | None = None,
    on_event: Callable[[dict[str, Any]], None] = print,
    seed: int = 0,
) -> tuple[dict[str, Any], bytes]:
    """Train with `TorchTrainer`; returns (summary, the final unsharded state dict serialized)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Queue

    from discord_ml.quests.tasks.trainer import train_loop

    def shards(days: list[dt.date]) -> tuple[list[list[Any]], int]:
        ds = ray.data.read_parquet(feature_files(lake, days), filesystem=lake.filesystem, columns=FEATURE_COLUMNS)
        # Each worker permutes its own shard every epoch; a global shuffle would cost more than it gives.
        splits = ds.split(workers, equal=True)
        return [split.to_arrow_refs() for split in splits], sum(split.count() for split in splits)

    (train_shards, train_rows), (valid_shards, _) = shards(train), shards([validation])
    progress = Queue(actor_options={"num_cpus": 0})
    fail_once = None
    if fail_once_at_epoch is not None:
        fail_once = {"epoch": fail_once_at_epoch, "root": lake.root, "marker": ["runs", run_id, DRILL_MARKER]}
    config = {
        "model": model.to_dict(),
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "sparse_learning_rate": sparse_learning_rate,
        "threads": _threads_per_worker(use_gpu),
        "seed": seed,
        "train_shards": train_shards,
        "valid_shards": valid_shards,
        "progress": progress,
        "fail_once": fail_once,
    }
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=config,
        scaling_config=_scaling(workers, use_gpu),
        run_config=RunConfig(
            name="train",
            storage_path=lake.run_storage(run_id),
            failure_config=FailureConfig(max_failures=2),
            # The best epochs by validation AUC are kept (and always the latest, to resume from).
            checkpoint_config=CheckpointConfig(
                num_to_keep=2, checkpoint_score_attribute="valid_auc", checkpoint_score_order="max"
            ),
        ),
    )
    events: list[dict[str, Any]] = []

    def record(event: dict[str, Any]) -> None:
        events.append(event)
        on_event(event)

    stop = threading.Event()
    forwarder = threading.Thread(target=_forward_progress, args=(progress, record, stop), daemon=True)
    forwarder.start()
    started = time.perf_counter()
    try:
        result = trainer.fit()
    finally:
        stop.set()
        forwarder.join(timeout=10)
    best = result.get_best_checkpoint(metric="valid_auc", mode="max")  # early stopping on the validation day
    if best is None:
        raise RuntimeError("training finished without a checkpoint")
    with best.as_directory() as directory:
        state, artifact = unshard_checkpoint(directory, model)
    epoch_events = [e for e in events if e["kind"] == "epoch"]
    plan = next((e for e in events if e["kind"] == "plan"), {})
    summary = {
        "metrics": state["metrics"],
        "best_epoch": state["epoch"],
        "epochs_run": [e["epoch"] for e in epoch_events],
        "history": [{k: v for k, v in e.items() if k != "kind"} for e in epoch_events],
        "shard_plan": plan.get("tables", []),
        "world": plan.get("world"),
        "backend": plan.get("backend"),
        "memory": sorted({e["rank"]: e for e in events if e["kind"] == "memory"}.values(), key=lambda e: e["rank"]),
        "resumed_at_epoch": [e["epoch"] for e in events if e["kind"] == "resumed"],
        "train_rows": train_rows,
        "fit_seconds": time.perf_counter() - started,
    }
    return summary, artifact


def unshard_checkpoint(directory: str, model: ModelConfig) -> tuple[dict[str, Any], bytes]:
    """(epoch state, serialized state dict of the unsharded model) from a trainer checkpoint.

    `torch.distributed.checkpoint` reassembles every table from its shards without a process group."""
    import torch
    from torch.distributed.checkpoint.state_dict_loader import load as dcp_load

    from discord_ml.quests.ml.models import build_model
    from discord_ml.quests.tasks.trainer import STATE_FILE

    weights = build_model(model).state_dict()
    dcp_load({"model": weights}, checkpoint_id=directory, no_dist=True)
    with open(f"{directory}/{STATE_FILE}") as f:
        state = json.load(f)
    buffer = io.BytesIO()
    torch.save(weights, buffer)
    return state, buffer.getvalue()


def _threads_per_worker(use_gpu: bool) -> int:
    """Torch threads of each CPU worker: its node's CPUs (one worker per node)."""
    if use_gpu:
        return 4
    cpus = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0]
    return max(1, int(min(cpus, default=1)))


# --- xgboost baseline ---------------------------------------------------------------------------

XGB_PARAMS = {
    "objective": "binary:logistic",
    "eval_metric": "logloss",
    "tree_method": "hist",
    "max_depth": 8,
    "eta": 0.1,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "min_child_weight": 5,
    "max_cat_to_onehot": 1,  # partition-based splits on the categorical vocabularies
}
XGB_COLUMNS = ["impression_id", "user_id", "quest_id", *SPARSE[2:], *DENSE, "label"]


@ray.remote(num_cpus=1)
def _fit_xgboost(train: pa.Table, valid: pa.Table, rounds: int) -> tuple[bytes, bytes, dict[str, Any]]:
    import xgboost as xgb

    from discord_ml.quests.ml.baseline import CountStats, scoring_matrix, training_matrix

    started = time.perf_counter()
    stats = CountStats.fit(train)  # from the training days only
    dtrain = xgb.DMatrix(training_matrix(train, stats), label=train["label"].to_numpy(), enable_categorical=True)
    dvalid = xgb.DMatrix(scoring_matrix(valid, stats), label=valid["label"].to_numpy(), enable_categorical=True)
    booster = xgb.train(
        XGB_PARAMS, dtrain, rounds, evals=[(dvalid, "valid")], early_stopping_rounds=20, verbose_eval=False
    )
    booster = booster[: booster.best_iteration + 1]  # keep only the rounds early stopping chose
    p = booster.predict(dvalid)
    y = valid["label"].to_numpy()
    seconds = time.perf_counter() - started
    metrics = {
        "valid_auc": auc(y, p),
        "valid_log_loss": log_loss(y, p),
        "best_iteration": booster.num_boosted_rounds() - 1,
        "samples_per_s": train.num_rows * booster.num_boosted_rounds() / seconds,
    }
    return bytes(booster.save_raw("ubj")), stats.to_bytes(), metrics


def train_xgboost(lake: Lake, train: list[dt.date], validation: dt.date, rounds: int = 300) -> tuple[dict, dict]:
    """(summary, registry files) of the baseline: booster and the window's count statistics."""
    started = time.perf_counter()
    model, counts, metrics = ray.get(
        _fit_xgboost.remote(read_table(lake, train, XGB_COLUMNS), read_table(lake, [validation], XGB_COLUMNS), rounds)
    )
    return {"metrics": metrics, "fit_seconds": time.perf_counter() - started}, {
        "model.ubj": model,
        "counts.npz": counts,
    }


# --- entry point --------------------------------------------------------------------------------


def train_and_register(args: TrainArgs, on_event: Callable[[dict[str, Any]], None]) -> ModelVersion:
    """Train the model `args` names on its window and register the result as a new version."""
    lake = Lake(args.root)
    train, validation, test = split_window(parse_date(args.date, field="partition"), args.window)
    feature_files(lake, [*train, validation, test])  # fail before any work when a day is missing
    spec = FeatureSpec()  # the one prep hashed with
    card: dict[str, Any] = {
        "data_window": [date_str(d) for d in train],
        "validation_day": date_str(validation),
        "holdout_day": date_str(test),
        "partition": args.date,
        "window_days": args.window,
        "run_id": args.run_id,
        "features": {"user_buckets": spec.user_buckets, "quest_buckets": spec.quest_buckets},
    }
    if args.model == "xgboost":
        summary, files = train_xgboost(lake, train, validation, rounds=args.rounds)
        card |= {"kind": "xgboost", "params": XGB_PARAMS, "rounds": args.rounds}
    else:
        use_gpu = _use_gpu(args.device)
        model = ModelConfig(model_name=args.model, embedding_dim=args.embedding_dim, features=spec)
        summary, artifact = train_neural(
            lake,
            train,
            validation,
            model=model,
            workers=args.workers,
            epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            sparse_learning_rate=args.sparse_learning_rate,
            use_gpu=use_gpu,
            run_id=args.run_id,
            fail_once_at_epoch=args.fail_once_at_epoch,
            on_event=on_event,
        )
        files = {"model.pt": artifact}
        card |= {
            "kind": "torch",
            "model": model.to_dict(),
            "workers": args.workers,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "sparse_learning_rate": args.sparse_learning_rate,
            "backend": "nccl" if use_gpu else "gloo",
        }
    card["training"] = summary
    return ModelRegistry(lake).register(args.model, files, card)


def _scaling(nodes: int, use_gpu: bool) -> Any:
    """One worker per node on CPU (each owns its node); on GPUs one worker per GPU, packed."""
    from ray.train import ScalingConfig

    if not use_gpu:
        return ScalingConfig(num_workers=nodes, use_gpu=False, placement_strategy="SPREAD")
    gpus = int(ray.cluster_resources().get("GPU", 0))
    return ScalingConfig(num_workers=max(gpus, 1), use_gpu=True, placement_strategy="PACK")


def _use_gpu(device: str) -> bool:
    if device == "auto":
        return ray.cluster_resources().get("GPU", 0) > 0
    return device == "gpu"


def main() -> None:
    """The Ray job: train on the window with Ray Train and report the model through Dagster Pipes."""
    args = TrainArgs.parse()
    with open_dagster_pipes() as pipes:
        init_ray()

        def on_event(event: dict[str, Any]) -> None:
            fields = {k: v for k, v in event.items() if k != "kind"}
            pipes.log.info(f"train {event['kind']}: {json.dumps(fields, default=float)}")

        version = train_and_register(args, on_event)
        training = version.card["training"]
        metadata: dict[str, Any] = {
            "model_version": version.ref,
            "model_path": version.path,
            "data_window": ", ".join(version.card["data_window"]),
            "validation_day": version.card["validation_day"],
            "holdout_day": version.card["holdout_day"],
            "git_sha": version.card["git_sha"],
            **{k: round(float(v), 5) for k, v in training["metrics"].items() if isinstance(v, int | float)},
            "fit_seconds": round(training["fit_seconds"], 2),
        }
        if "shard_plan" in training:
            metadata |= {
                "shard_plan": json.dumps(training["shard_plan"]),
                "memory_per_worker": json.dumps(training["memory"]),
                "resumed_at_epoch": json.dumps(training["resumed_at_epoch"]),
            }
        pipes.report_asset_materialization(metadata=metadata)


if __name__ == "__main__":
    main()
