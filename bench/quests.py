"""Benchmark of the quests workload against references measured in the same run.

    python -m bench.quests [--quick] [--json]

The full run uses 2M impressions (8 days of 250k) and adds DCN-v2; `--quick` (about 5 minutes on 2
cores) uses 750k, too few for the quality to mean much at this batch size. The batch is 8,192 rows
per worker (see bench/train_step.py). It prints:
- the quality table on the held-out day: DLRM (and DCN-v2) trained by Ray Train + TorchRec on 2
  workers vs the XGBoost baseline trained on the same window, random, and the oracle (the true
  probabilities: the Bayes limit);
- training throughput (median samples/s of the epochs after the first) of the sharded trainer with 1
  and 2 workers vs plain single-process PyTorch on the same model, data and batch, with 1 thread
  and with every core;
- batch inference: the actor pool's start-up and steady-state rows/s per actor vs a plain
  single-process scorer timed the same way, on a large serving day (the real day's slates tiled to
  2M candidate rows, 10M in the full run): the real day is a few parts per actor, too few to time;
- peak resident memory per training worker (sampled from /proc every 0.2 s).
`--json` prints one JSON object with the ratios on the last line.

Everything runs on a real local Ray cluster (head + 2 workers of 1 CPU) made by the platform.
"""

import argparse
import datetime as dt
import io
import json
import multiprocessing
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import psutil

from discord_ml.cluster.local.provider import LocalRayProvider
from discord_ml.cluster.spec import ClusterSpec
from discord_ml.jobs.client import RayJobs
from discord_ml.quests.entrypoints import EvaluateArgs, InferenceArgs, TrainArgs
from discord_ml.quests.lake import Lake, date_str
from discord_ml.quests.ml.world import REQUEST_ROW_GROUP, WorldConfig, generate
from discord_ml.quests.model_registry import ModelRegistry
from discord_ml.quests.tasks.evaluate import markdown_table
from discord_ml.quests.tasks.inference import MAX_PART_ROWS, RESULT_PREFIX, plan_parts
from discord_ml.quests.tasks.prep import prep_in_process


@contextmanager
def peak_rss(match: Callable[[psutil.Process], bool]) -> Iterator[dict[str, float]]:
    """Sample the summed and the largest single RSS (MiB) of the processes `match` selects."""
    peak = {"total_mib": 0.0, "max_process_mib": 0.0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            sizes = []
            for process in psutil.process_iter():
                try:
                    if match(process):
                        sizes.append(process.memory_info().rss / 2**20)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            if sizes:
                peak["total_mib"] = max(peak["total_mib"], sum(sizes))
                peak["max_process_mib"] = max(peak["max_process_mib"], *sizes)
            stop.wait(0.2)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()


def _title(prefix: str) -> Callable[[psutil.Process], bool]:
    def match(process: psutil.Process) -> bool:
        cmdline = process.cmdline()
        return bool(cmdline) and cmdline[0].startswith(prefix)

    return match


def _plain_train(root: str, days: list[str], validation: str, model: str, threads: int, args: Any, out: Any) -> None:
    import resource

    from discord_ml.quests.lake import parse_date
    from discord_ml.quests.ml.models import ModelConfig
    from discord_ml.quests.ml.single import train_single_process
    from discord_ml.quests.tasks.train import read_table

    lake = Lake(root)
    train = read_table(lake, [parse_date(d) for d in days])
    valid = read_table(lake, [parse_date(validation)])
    _, history = train_single_process(ModelConfig(model_name=model), train, valid, epochs=args.epochs,
                                      batch_size=args.batch_size, learning_rate=args.learning_rate,
                                      sparse_learning_rate=args.sparse_learning_rate, threads=threads)  # fmt: skip
    out.put({"history": history, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def _plain_score(root: str, ref: str, day: str, out: Any) -> None:
    """The reference: one process, no Ray, running the actors' own code (`ScoreParts`: read, score, rank the
    top 3, write) over the same parts one after the other; start-up (warm-up included) from the process's birth,
    as for an actor."""
    import numpy as np

    from discord_ml.quests.lake import parse_date
    from discord_ml.quests.tasks.inference import ScoreParts

    lake = Lake(root)
    parts, _ = plan_parts(lake, lake.files(lake.requests_dir(parse_date(day))), actors=2, max_rows=MAX_PART_ROWS)
    with tempfile.TemporaryDirectory() as staging:
        scorer = ScoreParts(root, ref, "cpu", staging, 3, warm=parts[0])  # warmed as the actors are
        report = scorer({key: np.array([getattr(p, key) for p in parts], dtype=object)
                         for key in ("file", "row_group", "start", "stop")})  # fmt: skip
    valid = sum(report["valid"])
    out.put({"startup_s": scorer.startup_s, "rows_per_s": valid / sum(report["seconds"]),
             "rows_per_cpu_s": valid / sum(report["cpu_seconds"])})  # fmt: skip


def _in_child(target: Callable[..., None], *args: Any) -> dict[str, Any]:
    """Run `target` in a fresh process (its own peak memory) and return what it put on the queue."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(*args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def _tile_requests(lake: Lake, source: dt.date, target: dt.date, rows: int) -> int:
    """Land a serving day of `rows` candidate rows: `source`'s slates repeated under new request IDs."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    base = lake.read_table(lake.files(lake.requests_dir(source)))
    copies = -(-rows // base.num_rows)
    span = int(pc.max(base["request_id"]).as_py()) + 1  # pyright: ignore[reportAttributeAccessIssue]
    tables = [base.set_column(base.schema.get_field_index("request_id"), "request_id",
                              pc.add(base["request_id"], pa.scalar(i * span))) for i in range(copies)]  # fmt: skip
    sink = io.BytesIO()
    pq.write_table(pa.concat_tables(tables), sink, row_group_size=REQUEST_ROW_GROUP)
    lake.write_bytes_atomic(f"{lake.requests_dir(target)}/requests.parquet", sink.getvalue())
    return copies * base.num_rows


QUICK = {"days": 5, "impressions_per_day": 150_000, "requests_per_day": 20_000, "epochs": 6,
         "inference_rows": 2_000_000}  # fmt: skip
FULL = {"days": 8, "impressions_per_day": 250_000, "requests_per_day": 50_000, "epochs": 4,
        "inference_rows": 10_000_000}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="750k impressions, DLRM only (about 5 minutes)")
    parser.add_argument("--json", action="store_true", help="end with one JSON object of the results")
    parser.add_argument("--days", type=int, help="days landed; the last is held out")
    parser.add_argument("--impressions-per-day", type=int)
    parser.add_argument("--requests-per-day", type=int, help="serving requests (x8 candidates)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument(
        "--inference-rows",
        type=int,
        help="candidate rows of the large serving day the steady state is timed on (0: none)",
    )
    parser.add_argument("--learning-rate", type=float, default=0.01, help="Adam step of the dense layers")
    parser.add_argument("--sparse-learning-rate", type=float, default=0.5, help="Adagrad step of the tables")
    parser.add_argument("--batch-size", type=int, default=8192, help="rows per step per worker")
    args = parser.parse_args()
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    models = ("dlrm",) if args.quick else ("dlrm", "dcn_v2")

    root = tempfile.mkdtemp(prefix="dml-bench-quests-")
    lake = Lake(root)
    world = WorldConfig(users=10_000, quests=600, impressions_per_day=args.impressions_per_day,
                        requests_per_day=args.requests_per_day)  # fmt: skip
    started = time.perf_counter()
    landed = generate(lake, days=args.days, config=world)
    days = [dt.date.fromisoformat(d["date"]) for d in landed]
    for day in days:
        prep_in_process(lake, day)
    total = sum(d["impressions"] for d in landed)
    print(f"data: {total:,} impressions over {args.days} days ({world.users:,} users, {world.quests} quests), "
          f"generated and featurized in {time.perf_counter() - started:.0f}s under {root}", flush=True)  # fmt: skip
    # The trainer's roles: training days, the validation day, the test day (the last; only reported).
    train_days, validation, test = [date_str(d) for d in days[:-2]], date_str(days[-2]), date_str(days[-1])

    provider = LocalRayProvider()
    spec = ClusterSpec.build(name="bench-quests", owner="bench", workers=2, head_memory="2Gi", worker_memory="6Gi",
                             ttl="2h")  # fmt: skip
    provider.create(spec)
    try:
        provider.wait_ready(spec.cluster_name, timeout=300)
        connection = provider.connect(spec.cluster_name)
        registry = ModelRegistry(lake)
        lines: list[str] = []

        def job(command: str, label: str) -> float:
            begun = time.perf_counter()
            lines.clear()
            outcome = RayJobs.of(connection).submit_and_follow(entrypoint=command, on_line=lines.append)
            seconds = time.perf_counter() - begun
            if outcome.status != "SUCCEEDED":
                raise RuntimeError(f"{label} ended {outcome.status}:\n" + "\n".join(lines[-40:]))
            print(f"  {label}: {seconds:.0f}s", flush=True)
            return seconds

        common = TrainArgs(root=root, date=test, window=args.days, epochs=args.epochs, learning_rate=args.learning_rate,
                           sparse_learning_rate=args.sparse_learning_rate, batch_size=args.batch_size)  # fmt: skip
        results: dict[str, dict[str, Any]] = {}
        print("training (Ray Train + TorchRec):", flush=True)
        for model, workers in [("dlrm", 1), *((m, 2) for m in models)]:
            with peak_rss(_title("ray::RayTrainWorker")) as peak:
                command = replace(common, model=model, workers=workers, run_id=f"bench-{model}-{workers}").command()
                wall = job(command, f"{model}, {workers} worker(s)")
            version = registry.latest(model)
            assert version is not None
            results[f"{model}/{workers}"] = {"version": version, "wall": wall, "peak": dict(peak)}
        print("training (plain single-process PyTorch):", flush=True)
        plain: dict[str, dict[str, Any]] = {}
        for model, threads in [("dlrm", 1), ("dlrm", os.cpu_count() or 1), *((m, 1) for m in models[1:])]:
            begun = time.perf_counter()
            plain[f"{model}/{threads}"] = _in_child(_plain_train, root, train_days, validation, model, threads, args)
            print(f"  {model}, {threads} thread(s): {time.perf_counter() - begun:.0f}s", flush=True)

        print("evaluation:", flush=True)
        tables = {}
        for model in models:
            ref = results[f"{model}/2"]["version"].ref
            job(EvaluateArgs(root=root, candidate=ref).command(), f"evaluate {ref}")
            tables[model] = lake.read_json(f"{lake.evaluation_dir(days[-1])}/{ref.replace('/v', '-v')}/metrics.json")

        print("batch inference:", flush=True)
        best = max(models, key=lambda m: tables[m]["table"]["candidate"]["expected_participation"])
        ref = results[f"{best}/2"]["version"].ref
        serving = date_str(days[-1] + dt.timedelta(days=1))
        inference: dict[str, Any] = {}
        for label, day in [("serving day", serving), *([("large day", "2030-01-01")] if args.inference_rows else [])]:
            if label == "large day":
                rows = _tile_requests(lake, days[-1] + dt.timedelta(days=1), dt.date(2030, 1, 1), args.inference_rows)
                print(f"  landed {rows:,} candidate rows for {day}", flush=True)
            job(InferenceArgs(root=root, date=day, model=ref, actors=2).command(), f"actor pool, {ref}, {label}")
            [summary] = [line for line in lines if line.startswith(RESULT_PREFIX)]
            inference[label] = json.loads(summary.removeprefix(RESULT_PREFIX))
        # The steady state is compared on the largest day: a few parts per actor are too few to time.
        steady = "large day" if args.inference_rows else "serving day"
        plain_scoring = _in_child(_plain_score, root, ref, inference[steady]["serving_day"]) | {"label": steady}
    finally:
        provider.delete(spec.cluster_name)

    report = _report(results, plain, tables, inference, plain_scoring, ref)
    if args.json:
        print(json.dumps(report))


def _epoch_rate(history: list[dict[str, Any]]) -> float:
    """Median samples/s of the epochs after the first (the first pays one-time start-up). One epoch of
    the quick run is a few seconds, and on this machine one in a few is 20-30% slower, whoever runs."""
    rates = [h["samples_per_s"] for h in history[1:]] or [history[0]["samples_per_s"]]
    return statistics.median(rates)


def _sharded_rate(result: dict[str, Any]) -> float:
    return _epoch_rate(result["version"].card["training"]["history"])


def _report(results: dict, plain: dict, tables: dict, inference: dict, plain_scoring: dict, ref: str) -> dict:
    print(
        "\n=== quality on the test day (2 workers; XGBoost trained on the same window; tuning used the validation "
        "day only) ==="
    )
    for model, table in tables.items():
        print(f"\n{model}:\n{markdown_table(table['table'])}")

    cores = os.cpu_count() or 1
    print("\n=== training throughput (median samples/s of the epochs after the first) and peak memory ===")
    print("| trainer | model | samples/s | vs plain, 1 thread | vs plain, all cores | peak RSS per worker (MiB) |")
    print("|---|---|---|---|---|---|")
    base = {key: _epoch_rate(value["history"]) for key, value in plain.items()}
    for key, rate in base.items():
        model, threads = key.split("/")
        print(f"| plain PyTorch, 1 process, {threads} thread(s) | {model} | {rate:,.0f} | "
              f"{rate / base[f'{model}/1']:.2f}x | - | {plain[key]['peak_mib']:,.0f} |")  # fmt: skip
    for key, result in results.items():
        model, workers = key.split("/")
        rate = _sharded_rate(result)
        all_cores = base.get(f"{model}/{cores}")
        versus_all = f"{rate / all_cores:.2f}x" if all_cores else "-"
        peak = result["peak"]["max_process_mib"]
        print(f"| Ray Train + TorchRec, {workers} worker(s) | {model} | {rate:,.0f} | "
              f"{rate / base[f'{model}/1']:.2f}x | {versus_all} | {peak:,.0f} |")  # fmt: skip
    memory = results["dlrm/2"]["version"].card["training"]["memory"]
    print("\nper-worker memory of the 2-worker DLRM (bytes):")
    for m in memory:
        print(f"  rank {m['rank']}: sharded tables {m['sharded_table_bytes']:,} + their optimizer state "
              f"{m['sharded_optimizer_bytes']:,}; replicated tables {m['replicated_table_bytes']:,}; "
              f"data shard {m['data_shard_bytes']:,}")  # fmt: skip

    print("\n=== batch inference (rows/s) ===")
    print(f"model {ref}")
    print("| scorer | candidate rows | start-up (s) | steady rows/s per core | vs plain | rows per CPU-second "
          "| vs plain | end to end rows/s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    plain_cpu = plain_scoring["rows_per_cpu_s"]
    plain_rate = plain_scoring["rows_per_s"]
    steady = inference[plain_scoring["label"]]
    print(f"| plain single process, 1 thread | {steady['candidate_rows']:,} | {plain_scoring['startup_s']:.1f} | "
          f"{plain_rate:,.0f} | 1.00x | {plain_cpu:,.0f} | 1.00x | - |")  # fmt: skip
    for label, run in inference.items():
        per_core = run["rows_per_s_per_actor"]
        print(f"| Ray Data actor pool ({run['actors']} actors, {run['parts']} parts), {label} | "
              f"{run['candidate_rows']:,} | {run['actor_startup_s']:.1f} | {per_core:,.0f} | "
              f"{per_core / plain_rate:.2f}x | {run['rows_per_cpu_s_per_actor']:,.0f} | "
              f"{run['rows_per_cpu_s_per_actor'] / plain_cpu:.2f}x | {run['rows_per_s']:,.0f} |")  # fmt: skip

    candidate = tables["dlrm"]["table"]["candidate"]
    return {
        "train_ratio_1_worker": _sharded_rate(results["dlrm/1"]) / base["dlrm/1"],
        "train_ratio_2_workers": _sharded_rate(results["dlrm/2"]) / base["dlrm/1"],
        "train_ratio_2_workers_vs_all_cores": _sharded_rate(results["dlrm/2"]) / base[f"dlrm/{cores}"],
        "inference_ratio": steady["rows_per_s_per_actor"] / plain_rate,
        "inference_ratio_cpu_time": steady["rows_per_cpu_s_per_actor"] / plain_cpu,
        "inference_startup_s": steady["actor_startup_s"],
        "inference_rows": steady["candidate_rows"],
        "plain_scorer_startup_s": plain_scoring["startup_s"],
        "inference_end_to_end_rows_per_s": {label: run["rows_per_s"] for label, run in inference.items()},
        "auc_lift_of_bayes": candidate["auc_lift_share"],
        "oracle_lift_share": candidate["oracle_lift_share"],
        "participation_vs_xgboost": candidate["participation_vs_xgboost"],
        "peak_rss_mib_per_worker": {key: r["peak"]["max_process_mib"] for key, r in results.items()},
        "memory_per_worker": memory,
    }


if __name__ == "__main__":
    main()
