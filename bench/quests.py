"""Benchmark of the quests workload on at least 2M impressions, against references measured in the
same run.

    python -m bench.quests [--days 8] [--impressions-per-day 250000] [--epochs 3]

Prints:
- the quality table of DLRM and DCN-v2 (Ray Train + TorchRec, 2 workers) vs the XGBoost baseline
  trained on the same window, random, and the oracle (the true probabilities: the Bayes limit);
- training throughput (samples/s) of the Ray Train + TorchRec trainer with 1 and 2 workers vs plain
  single-process PyTorch on the same model, data, batch size and epochs;
- batch inference rows/s of the Ray Data actor pool vs plain single-process scoring;
- peak resident memory of each (sampled from /proc every 0.2 s).

Everything runs on a real local Ray cluster (head + 2 workers of 1 CPU) made by the platform.
"""

import argparse
import datetime as dt
import json
import multiprocessing
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psutil

from discord_ml.cluster.local_provider import LocalRayProvider
from discord_ml.cluster.spec import ClusterSpec
from discord_ml.jobs import submit_and_follow
from discord_ml.lake import Lake, date_str
from discord_ml.ml.evaluate import markdown_table
from discord_ml.ml.inference import RESULT_PREFIX
from discord_ml.ml.world import WorldConfig, generate
from discord_ml.registry import ModelRegistry
from discord_ml_tests.support.quests import read_dir, write_features_in_process


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


def _plain_train(root: str, days: list[str], holdout: str, model: str, args: argparse.Namespace, out: Any) -> None:
    import resource

    import torch

    from discord_ml.lake import parse_date
    from discord_ml.ml.models import ModelConfig
    from discord_ml.ml.single import train_single_process
    from discord_ml.ml.train import read_table

    torch.set_num_threads(1)  # one core, like each Ray Train worker here
    lake = Lake(root)
    train = read_table(lake, [parse_date(d) for d in days])
    valid = read_table(lake, [parse_date(holdout)])
    _, history = train_single_process(ModelConfig(model_name=model), train, valid, epochs=args.epochs,
                                      batch_size=args.batch_size, learning_rate=args.learning_rate,
                                      sparse_learning_rate=args.sparse_learning_rate)  # fmt: skip
    out.put({"history": history, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def _plain_score(root: str, ref: str, day: str, out: Any) -> None:
    import resource

    import torch

    from discord_ml.lake import parse_date
    from discord_ml.ml.features import split_valid
    from discord_ml.ml.scoring import Scorer

    torch.set_num_threads(1)
    lake = Lake(root)
    scorer = Scorer(lake, ModelRegistry(lake).get(ref))
    requests = read_dir(lake, lake.requests_dir(parse_date(day)))
    started = time.perf_counter()
    valid, _ = split_valid(requests, with_label=False)
    scores = scorer.score(scorer.featurize(valid))
    seconds = time.perf_counter() - started
    out.put(
        {"rows_per_s": len(scores) / seconds, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    )


def _in_child(target: Callable[..., None], *args: Any) -> dict[str, Any]:
    """Run `target` in a fresh process (its own peak memory) and return what it put on the queue."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(*args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=8, help="days landed; the last is held out")
    parser.add_argument("--impressions-per-day", type=int, default=250_000)
    parser.add_argument("--requests-per-day", type=int, default=50_000, help="serving requests (x8 candidates)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--learning-rate", type=float, default=0.01, help="Adam step of the dense layers")
    parser.add_argument("--sparse-learning-rate", type=float, default=0.5, help="Adagrad step of the tables")
    parser.add_argument("--batch-size", type=int, default=2048)
    args = parser.parse_args()

    root = tempfile.mkdtemp(prefix="dml-bench-quests-")
    lake = Lake(root)
    world = WorldConfig(users=10_000, quests=600, impressions_per_day=args.impressions_per_day,
                        requests_per_day=args.requests_per_day)  # fmt: skip
    started = time.perf_counter()
    landed = generate(lake, days=args.days, config=world)
    days = [dt.date.fromisoformat(d["date"]) for d in landed]
    for day in days:
        write_features_in_process(lake, day)
    total = sum(d["impressions"] for d in landed)
    print(f"data: {total:,} impressions over {args.days} days ({world.users:,} users, {world.quests} quests), "
          f"generated and featurized in {time.perf_counter() - started:.0f}s under {root}", flush=True)  # fmt: skip
    train_days, holdout = [date_str(d) for d in days[:-1]], date_str(days[-1])

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
            submit_and_follow(connection.dashboard_url, entrypoint=command, headers=connection.headers,
                              on_line=lines.append)  # fmt: skip
            seconds = time.perf_counter() - begun
            print(f"  {label}: {seconds:.0f}s", flush=True)
            return seconds

        common = f"--root {root} --date {holdout} --window {args.days} --epochs {args.epochs} " \
                 f"--learning-rate {args.learning_rate} --sparse-learning-rate {args.sparse_learning_rate} " \
                 f"--batch-size {args.batch_size}"  # fmt: skip
        results: dict[str, dict[str, Any]] = {}
        print("training (Ray Train + TorchRec):", flush=True)
        for model, workers in (("dlrm", 1), ("dlrm", 2), ("dcn_v2", 2)):
            with peak_rss(_title("ray::RayTrainWorker")) as peak:
                wall = job(f"python -m discord_ml.ml.train {common} --model {model} --workers {workers} "
                           f"--run-id bench-{model}-{workers}", f"{model}, {workers} worker(s)")  # fmt: skip
            version = registry.latest(model)
            assert version is not None
            results[f"{model}/{workers}"] = {"version": version, "wall": wall, "peak": dict(peak)}
        print("training (plain single-process PyTorch):", flush=True)
        plain: dict[str, dict[str, Any]] = {}
        for model in ("dlrm", "dcn_v2"):
            begun = time.perf_counter()
            plain[model] = _in_child(_plain_train, root, train_days, holdout, model, args)
            print(f"  {model}: {time.perf_counter() - begun:.0f}s", flush=True)

        print("evaluation:", flush=True)
        tables = {}
        for key in ("dlrm/2", "dcn_v2/2"):
            ref = results[key]["version"].ref
            job(f"python -m discord_ml.ml.evaluate --root {root} --candidate {ref}", f"evaluate {ref}")
            tables[key] = lake.read_json(f"{lake.evaluation_dir(days[-1])}/{ref.replace('/v', '-v')}/metrics.json")

        print("batch inference:", flush=True)
        best = max(("dlrm/2", "dcn_v2/2"), key=lambda k: tables[k]["table"]["candidate"]["expected_participation"])
        ref = results[best]["version"].ref
        serving = date_str(days[-1] + dt.timedelta(days=1))
        with peak_rss(_title("ray::MapWorker")) as inference_peak:
            job(f"python -m discord_ml.ml.inference --root {root} --date {serving} --model {ref} --actors 2",
                f"Ray Data actor pool, {ref}")  # fmt: skip
        [summary] = [line for line in lines if line.startswith(RESULT_PREFIX)]
        inference = json.loads(summary.removeprefix(RESULT_PREFIX))
        plain_scoring = _in_child(_plain_score, root, ref, serving)
    finally:
        provider.delete(spec.cluster_name)

    _report(results, plain, tables, inference, dict(inference_peak), plain_scoring, lake, serving, ref)


def _epoch_rate(history: list[dict[str, Any]]) -> float:
    """Mean samples/s of the epochs after the first (the first pays one-time start-up)."""
    rates = [h["samples_per_s"] for h in history[1:]] or [history[0]["samples_per_s"]]
    return sum(rates) / len(rates)


def _report(results: dict, plain: dict, tables: dict, inference: dict, inference_peak: dict, plain_scoring: dict,
            lake: Lake, serving: str, ref: str) -> None:  # fmt: skip
    print("\n=== quality on the held-out day (2 workers; XGBoost trained on the same window) ===")
    for key, table in tables.items():
        print(f"\n{key.split('/')[0]}:\n{markdown_table(table['table'])}")

    print("\n=== training throughput (samples/s, epochs after the first) and peak memory ===")
    print("| trainer | model | samples/s | vs plain PyTorch | peak RSS per worker (MiB) | all workers (MiB) |")
    print("|---|---|---|---|---|---|")
    for model in ("dlrm", "dcn_v2"):
        base = _epoch_rate(plain[model]["history"])
        print(f"| plain PyTorch, 1 process | {model} | {base:,.0f} | 1.00x | {plain[model]['peak_mib']:,.0f} | - |")
        for workers in (1, 2):
            result = results.get(f"{model}/{workers}")
            if result is None:
                continue
            epochs = result["version"].card["training"]
            rate = epochs["metrics"]["samples_per_s"]
            print(f"| Ray Train + TorchRec, {workers} worker(s) | {model} | {rate:,.0f} | {rate / base:.2f}x | "
                  f"{result['peak']['max_process_mib']:,.0f} | {result['peak']['total_mib']:,.0f} |")  # fmt: skip

    print("\n=== batch inference (rows/s) and peak memory ===")
    rows = read_dir(lake, lake.recommendations_dir(dt.date.fromisoformat(serving))).num_rows
    print(f"model {ref}; {rows:,} recommendation rows written")
    print("| scorer | rows/s | vs plain | peak RSS (MiB) |")
    print("|---|---|---|---|")
    plain_rate = plain_scoring["rows_per_s"]
    print(f"| plain single process | {plain_rate:,.0f} | 1.00x | {plain_scoring['peak_mib']:,.0f} |")
    rate = inference["rows_per_s"]
    print(f"| Ray Data actor pool (2 actors, incl. start-up) | {rate:,.0f} | {rate / plain_rate:.2f}x | "
          f"{inference_peak['total_mib']:,.0f} (all actors) |")  # fmt: skip


if __name__ == "__main__":
    main()
