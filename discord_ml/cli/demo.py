"""The README's main command: the daily quests pipeline end to end on the embedded local backend.

1. A fresh synthetic world lands `--days` days of impressions (under `$DML_HOME/demo`, wiped first;
   never `DML_DATA_ROOT`, which may hold real data).
2. The landing sensor is ticked like the daemon would: it asks for a prep run per landed day,
   then, once the window has features, a retrain run (train → evaluate → promote → score).
3. Every requested run executes on the project's Dagster instance (`DAGSTER_HOME`), each on its own
   local Ray cluster, so the runs also show in `dagster dev`; the evaluation table is printed.

The terminal gets one line per step (updated in place on a terminal); the full Dagster log goes to
`--log` (default `$DML_HOME/demo.log`).
"""

import argparse
import json
import logging
import os
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, TextIO

import dagster as dg

from discord_ml.quests.lake import Lake
from discord_ml.settings import get_settings

# Small enough for about five minutes on two cores; `--full` is the benchmark's size.
SMALL_WORLD: dict[str, Any] = {"users": 2000, "quests": 300, "impressions_per_day": 60_000, "requests_per_day": 2000}
FULL_WORLD: dict[str, Any] = {"users": 10_000, "quests": 600, "impressions_per_day": 250_000}


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        if materialization.asset_key.to_user_string() == asset:
            return {k: v.value for k, v in materialization.metadata.items()}
    return {}


def _failures(result: dg.ExecuteInProcessResult) -> list[str]:
    messages = []
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.STEP_FAILURE:
            error = event.step_failure_data.error
            messages.append(error.message.strip() if error else str(event.message))
    return messages


# Lines of a step worth a person's attention, by how they start (everything is in the log file).
_NEWS = ("creating Ray cluster", "Ray cluster", "submitted Ray job", "train ", "quarantining", "promotion gate",
         "production model", "deleted Ray cluster", "step needs")  # fmt: skip


class _StepProgress(logging.Handler):
    """One line per step: its latest news (rewritten in place on a terminal), then how it ended."""

    def __init__(self, out: TextIO) -> None:
        super().__init__(logging.DEBUG)  # step events are logged at DEBUG
        self.out, self.live = out, out.isatty()
        self.width = shutil.get_terminal_size().columns - 1
        self.ended: set[str] = set()  # teardown still logs under the last step; its line is closed

    def emit(self, record: logging.LogRecord) -> None:
        meta: dict[str, Any] = getattr(record, "dagster_meta", None) or {}
        event, step = meta.get("dagster_event"), meta.get("step_key")
        kind = event.event_type_value if event is not None else None
        message = str(meta.get("orig_message", "")).strip().splitlines()[0] if meta.get("orig_message") else ""
        if not step:
            return
        if kind in ("STEP_SUCCESS", "STEP_FAILURE"):
            self.ended.add(step)
            self._line(f"  {step}: {'done' if kind == 'STEP_SUCCESS' else 'FAILED'}", end="\n")
        elif kind == "STEP_START":
            self._line(f"  {step}: started", end="" if self.live else "\n")
        elif kind is None and message.startswith(_NEWS) and self.live and step not in self.ended:
            self._line(f"  {step}: {message}", end="")

    def _line(self, text: str, end: str) -> None:
        if self.live:
            self.out.write("\r\x1b[K" + text[: self.width] + end)
        else:
            self.out.write(text + end)
        self.out.flush()


def _loggers(log_file: Path) -> dict[str, dg.LoggerDefinition]:
    """`progress` for the terminal, `file` for everything the console logger would have printed."""

    def progress(_: dg.InitLoggerContext) -> logging.Logger:
        logger = logging.Logger("demo-progress", logging.DEBUG)
        logger.addHandler(_StepProgress(sys.stdout))
        return logger

    def file(_: dg.InitLoggerContext) -> logging.Logger:
        logger = logging.Logger("dagster", logging.DEBUG)
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))
        logger.addHandler(handler)
        return logger

    return {
        "progress": dg.LoggerDefinition(progress, description="One line per step on the terminal."),
        "file": dg.LoggerDefinition(file, description="The whole Dagster log in a file."),
    }


def main(argv: list[str] | None = None) -> int:
    """Land the days, run the daily pipeline on a fresh Dagster instance, print the results; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=4, help="days to land (the training window is 4 days)")
    parser.add_argument("--full", action="store_true", help="benchmark-size world: 250k impressions a day")
    parser.add_argument("--log", type=Path, default=None, help="the full Dagster log (default $DML_HOME/demo.log)")
    args = parser.parse_args(argv)
    # Beta/preview notices about Dagster APIs the project chose are for its developers, not the demo's reader.
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)

    root = get_settings().home / "demo"
    log_file = args.log or get_settings().home / "demo.log"
    shutil.rmtree(root, ignore_errors=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.write_text("")
    os.environ["DML_DATA_ROOT"] = str(root)

    from discord_ml.definitions import defs
    from discord_ml.quests.assets import DataLakeResource
    from discord_ml.quests.automation import landed_impressions_sensor
    from discord_ml.quests.ml.world import WorldConfig, generate

    started = time.monotonic()
    world = WorldConfig(**(FULL_WORLD if args.full else SMALL_WORLD))
    for day in generate(Lake(str(root)), days=args.days, config=world):
        print(f"landed {day['date']}: {day['impressions']} impressions, {day['requests']} requests for the next day")

    instance = dg.DagsterInstance.get()
    print(f"Dagster instance: {instance.root_directory}; the full Dagster log goes to {log_file}", flush=True)
    loggers = _loggers(log_file)
    run_config: dict[str, Any] = {"loggers": {"progress": {}, "file": {}}}
    cursor: str | None = None
    outcomes: dict[str, dg.ExecuteInProcessResult] = {}
    while True:
        with dg.build_sensor_context(instance=instance, cursor=cursor, resources={"data": DataLakeResource()}) as ctx:
            tick = landed_impressions_sensor(ctx)
            cursor = ctx.cursor
        if isinstance(tick, dg.SkipReason) or tick is None:
            print(f"sensor: {tick.skip_message if tick else 'nothing to do'}")
            break
        assert isinstance(tick, dg.SensorResult)
        cursor = tick.cursor
        for request in tick.run_requests or []:
            assert isinstance(request, dg.RunRequest) and request.job_name
            print(f"\nsensor → {request.job_name} ({request.run_key})", flush=True)
            job = defs.resolve_job_def(request.job_name).with_logger_defs(loggers)
            result = job.execute_in_process(
                instance=instance, partition_key=request.partition_key, run_config=run_config,
                tags=request.tags, raise_on_error=False,
            )  # fmt: skip
            outcomes[request.run_key or request.job_name] = result
            print(f"run {result.run_id}: {'SUCCESS' if result.success else 'FAILURE'}", flush=True)
            for message in _failures(result):
                print(f"  failed: {message} (the whole log: {log_file})", file=sys.stderr)
    return _report(outcomes, time.monotonic() - started)


def _report(outcomes: dict[str, dg.ExecuteInProcessResult], seconds: float) -> int:
    print("\n=== results ===")
    for key, result in outcomes.items():
        if key.startswith("prep-"):
            meta = _metadata(result, "quest_features")
            print(f"{key}: {meta.get('rows_valid')} feature rows, {meta.get('rows_quarantined')} quarantined "
                  f"{meta.get('quarantine_reasons')}")  # fmt: skip
    retrains = [r for k, r in outcomes.items() if k.startswith("retrain-")]
    for result in retrains:
        train, evaluation = _metadata(result, "ranking_model"), _metadata(result, "model_evaluation")
        print(f"\ntrained {train.get('model_version')} on {train.get('data_window')}: AUC "
              f"{train.get('valid_auc')} on the validation day {train.get('validation_day')}")  # fmt: skip
        print(f"embedding tables (TorchRec plan): {_plan_summary(train.get('shard_plan'))}")
        if evaluation:
            print(f"\nevaluation on the test day {evaluation.get('holdout_day')} (nothing was tuned on it):\n"
                  f"{evaluation.get('quality')}")  # fmt: skip
        for check in result.get_asset_check_evaluations():
            meta = {k: v.value for k, v in check.metadata.items()}
            print(f"\ncheck {check.check_name}: {'PASSED' if check.passed else 'FAILED'}: {meta.get('reason')}")
        production, recommendations = _metadata(result, "production_model"), _metadata(result, "quest_recommendations")
        if production:
            print(f"production model: {production.get('production')} (was {production.get('previous')})")
        if recommendations:
            r = recommendations
            print(f"recommendations for {r.get('serving_day')}: {r.get('requests')} requests, coverage "
                  f"{r.get('coverage'):.1%}, top {r.get('top_k')}, {r.get('rows_per_s')} rows/s → "
                  f"{r.get('recommendations_path')}")  # fmt: skip
    ok = bool(outcomes) and all(r.success for r in outcomes.values()) and bool(retrains)
    print(f"\n{'SUCCESS' if ok else 'FAILURE'}: {len(outcomes)} runs in {seconds:.0f}s")
    return 0 if ok else 1


def _plan_summary(plan_json: object) -> str:
    """`user_bucket column_wise on ranks 0,1; quest_bucket table_wise on rank 1; 5 replicated`."""
    if not isinstance(plan_json, str):
        return "not reported"
    parts, replicated = [], 0
    for table in json.loads(plan_json):
        if table["sharding_type"] == "data_parallel":
            replicated += 1
            continue
        ranks = ",".join(str(s["rank"]) for s in table["shards"])
        parts.append(f"{table['table']} {table['sharding_type']} on rank(s) {ranks}")
    return "; ".join([*parts, f"{replicated} small table(s) replicated"])


if __name__ == "__main__":
    sys.exit(main())
