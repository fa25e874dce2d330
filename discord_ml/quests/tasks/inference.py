"""Ray job: score a day's serving requests with the production model and publish the top-K quests
of every request.

The day is cut into parts of whole row ranges (at least two per actor), and an actor pool (one CPU
or one GPU per actor, the model loaded once) scores each part, keeps the top K of every request
inside it and writes them straight into the staging directory: nothing of the day passes through
the driver but the candidates of the (at most two) requests a cut may split, which the driver
ranks and writes last. Start-up and steady-state scoring are timed separately. Every request gets
recommendations: IDs are hashed, so cold-start users and quests are scored like any other;
invalid request rows are counted.
"""

from __future__ import annotations

import io
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
from dagster_pipes import open_dagster_pipes

from discord_ml.quests.entrypoints import MAX_PART_ROWS, InferenceArgs
from discord_ml.quests.lake import Lake, LakeError, parse_date
from discord_ml.quests.ml.features import split_valid
from discord_ml.quests.ml.scoring import Scorer
from discord_ml.quests.model_registry import ModelRegistry, ModelVersion
from discord_ml.quests.tasks.runtime import init_ray

RESULT_PREFIX = "recommendations: "
OUTPUT_COLUMNS = ["request_id", "user_id", "quest_id", "score"]


@dataclass(frozen=True)
class Part:
    """Rows [start, stop) of one row group of one file."""

    file: str
    row_group: int
    start: int
    stop: int


def plan_parts(lake: Lake, files: list[str], *, actors: int, max_rows: int = MAX_PART_ROWS) -> tuple[list[Part], int]:
    """Cut the day's files into at least two parts per actor (fewer only when rows run out); returns
    (parts, candidate rows). Only the footers are read."""
    groups: list[tuple[str, int, int]] = []
    for f in files:
        with lake.filesystem.open_input_file(f) as handle:
            meta = pq.ParquetFile(handle).metadata
        groups += [(f, i, meta.row_group(i).num_rows) for i in range(meta.num_row_groups)]
    total = sum(rows for _, _, rows in groups)
    target = max(1, min(max_rows, -(-total // (2 * actors))))
    parts = [
        Part(f, group, start, min(start + target, rows))
        for f, group, rows in groups
        for start in range(0, rows, target)
    ]
    return parts, total


def top_k(scored: pa.Table, k: int) -> pa.Table:
    """The k best candidates of every request, ranked 1..k."""
    ordered = scored.sort_by([("request_id", "ascending"), ("score", "descending")])
    request_ids = ordered["request_id"].to_numpy()
    starts = np.r_[0, np.flatnonzero(request_ids[1:] != request_ids[:-1]) + 1]
    rank = np.arange(len(request_ids)) - np.repeat(starts, np.diff(np.r_[starts, len(request_ids)])) + 1
    keep = rank <= k
    return ordered.filter(pa.array(keep)).append_column("rank", pa.array(rank[keep], pa.int16()))


def _write(lake: Lake, path: str, table: pa.Table) -> None:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    with lake.filesystem.open_output_stream(path) as out:
        out.write(sink.getvalue())


class ScoreParts:
    """One actor of the pool: loads the model once, then scores, ranks and writes parts."""

    def __init__(self, root: str, ref: str, device: str, staging: str, k: int, warm: Part | None = None) -> None:
        import psutil
        import torch

        torch.set_num_threads(1)  # one actor per core
        self.lake, self.staging, self.k = Lake(root), staging, k
        self.scorer = Scorer(self.lake, ModelRegistry(self.lake).get(ref), device=device)
        if warm is not None:
            # The first pass through validation, features and the model is several times slower than
            # later ones (lazy kernel, compute-function and allocator set-up): pay it at start-up.
            self._rank(self._read(warm))
        # From the process's birth: imports, Ray's worker set-up, the model load and the warm-up.
        self.startup_s = time.time() - psutil.Process().create_time()

    def _read(self, part: Part) -> pa.Table:
        with self.lake.filesystem.open_input_file(part.file) as handle:
            rows = pq.ParquetFile(handle).read_row_group(part.row_group, use_threads=False)  # one core per actor
        return rows.slice(part.start, part.stop - part.start)

    def _rank(self, rows: pa.Table) -> tuple[pa.Table, pa.Table, pa.Table]:
        """(valid rows, top k of the requests inside the part, scored rows of the requests at its edges)."""
        valid, _ = split_valid(rows, with_label=False)
        scores = self.scorer.score(self.scorer.featurize(valid))
        scored = valid.select(OUTPUT_COLUMNS[:-1]).append_column("score", pa.array(scores, pa.float32()))
        # A cut may split the first and the last request of a part: the driver ranks those.
        ids = scored["request_id"].to_numpy()
        edge = np.isin(ids, ids[[0, -1]]) if len(ids) else np.zeros(0, bool)
        return valid, top_k(scored.filter(pa.array(~edge)), self.k), scored.filter(pa.array(edge))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        out: dict[str, list[Any]] = {"startup_s": [], "rows": [], "valid": [], "seconds": [], "cpu_seconds": [],
                                     "requests": [], "interior": [], "edges": []}  # fmt: skip
        for file, group, start, stop in zip(batch["file"], batch["row_group"], batch["start"], batch["stop"],
                                            strict=True):  # fmt: skip
            began, cpu_began = time.perf_counter(), time.thread_time()
            rows = self._read(Part(str(file), int(group), int(start), int(stop)))
            valid, interior, edges = self._rank(rows)
            if interior.num_rows:
                _write(self.lake, f"{self.staging}/part-{os.getpid()}-{group}-{start}.parquet", interior)
            out["requests"].append(np.unique(rows["request_id"].to_numpy(zero_copy_only=False)).tobytes())
            out["startup_s"].append(self.startup_s)
            out["rows"].append(rows.num_rows)
            out["valid"].append(valid.num_rows)
            out["seconds"].append(time.perf_counter() - began)
            # The rest of the wall time is waiting: for a core (shared with Ray's daemons) or for I/O.
            out["cpu_seconds"].append(time.thread_time() - cpu_began)
            out["interior"].append(np.unique(interior["request_id"].to_numpy()).tobytes())
            sink = io.BytesIO()
            pq.write_table(edges, sink)
            out["edges"].append(sink.getvalue())
        return {key: np.array(values, dtype=object) for key, values in out.items()}


def _merge(reports: list[dict[str, Any]], k: int) -> tuple[pa.Table, int]:
    """(top k of the requests cut at part edges, requests ranked inside parts); raises if a request's
    rows were not contiguous in the landed files."""
    edges = [pq.read_table(io.BytesIO(r["edges"])) for r in reports]
    edge_best = top_k(pa.concat_tables(edges), k) if edges else pa.table({})
    interior = np.concatenate([np.frombuffer(r["interior"], dtype=np.int64) for r in reports])
    edge_ids = np.unique(edge_best["request_id"].to_numpy()) if edge_best.num_rows else np.zeros(0, np.int64)
    every = np.concatenate([interior, edge_ids])
    unique, counts = np.unique(every, return_counts=True)
    if (counts > 1).any():
        raise LakeError(
            f"request {int(unique[counts > 1][0])} has candidate rows in several parts of the landed files; "
            "requests must be written with each request's candidates on consecutive rows"
        )
    return edge_best, len(interior)


def recommend(lake: Lake, day_text: str, version: ModelVersion, *, k: int, actors: int, log: Any = print,
              max_part_rows: int = MAX_PART_ROWS) -> dict:  # fmt: skip
    """Score requests of `day_text` with `version`; publish recommendations for that day."""
    day = parse_date(day_text, field="serving day")
    files = lake.files(lake.requests_dir(day))
    if not files:
        raise LakeError(f"no serving requests for {day_text} in {lake.requests_dir(day)}: has that day's slate landed?")
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    slots = gpus or int(resources.get("CPU", 1))
    if actors > slots:  # a pool larger than the cluster would wait forever for its last actors
        log(f"actors {actors} > {slots} {'GPUs' if gpus else 'CPUs'} in the cluster: using {slots}")
        actors = slots
    parts, total = plan_parts(lake, files, actors=actors, max_rows=max_part_rows)
    started = time.perf_counter()
    with lake.publish(lake.recommendations_dir(day)) as staging:
        items = ray.data.from_items([vars(p) for p in parts], override_num_blocks=len(parts))
        scored = items.map_batches(
            ScoreParts,
            fn_constructor_args=(lake.root, version.ref, "cuda" if gpus else "cpu", staging, k, parts[0]),
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_gpus=1 if gpus else 0,
            num_cpus=0 if gpus else 1,
        )
        reports = scored.take_all()
        edge_best, interior_requests = _merge(reports, k)
        if edge_best.num_rows:
            _write(lake, f"{staging}/part-edges.parquet", edge_best)
    seconds = time.perf_counter() - started
    rows = sum(r["rows"] for r in reports)
    valid = sum(r["valid"] for r in reports)
    busy = sum(r["seconds"] for r in reports)
    cpu = sum(r["cpu_seconds"] for r in reports)
    startup = max(r["startup_s"] for r in reports)
    covered = interior_requests + (len(np.unique(edge_best["request_id"].to_numpy())) if edge_best.num_rows else 0)
    requests = len(np.unique(np.concatenate([np.frombuffer(r["requests"], dtype=np.int64) for r in reports])))
    log(f"scored {valid} of {total} candidate rows in {len(parts)} parts on {actors} actor(s): {seconds:.1f}s "
        f"end to end, {valid / busy:,.0f} rows/s per actor once started (start-up {startup:.1f}s)")  # fmt: skip
    return {
        "serving_day": day_text,
        "model_version": version.ref,
        "candidate_rows": total,
        "rows_scored": valid,
        "rows_invalid": rows - valid,
        "requests": requests,
        "requests_with_recommendations": covered,
        "coverage": covered / max(requests, 1),
        "top_k": k,
        "parts": len(parts),
        "actors": actors,
        "actor_startup_s": round(startup, 2),
        "rows_per_s_per_actor": round(valid / max(busy, 1e-9), 1),
        "rows_per_cpu_s_per_actor": round(valid / max(cpu, 1e-9), 1),
        "rows_per_s": round(valid / seconds, 1),
        "seconds": round(seconds, 2),
        "device": "gpu" if gpus else "cpu",
        "recommendations_path": lake.recommendations_dir(day),
    }


def main() -> None:
    """The Ray job: score the next day with the production model and report through Dagster Pipes."""
    args = InferenceArgs.parse()
    with open_dagster_pipes() as pipes:
        init_ray()
        lake = Lake(args.root)
        registry = ModelRegistry(lake)
        version = registry.get(args.model) if args.model else registry.production()
        if version is None:
            raise LakeError("no production model yet: promote one (production_model) or pass --model")
        result = recommend(lake, args.date, version, k=args.top_k, actors=args.actors, log=pipes.log.info,
                           max_part_rows=args.max_part_rows)  # fmt: skip
        print(RESULT_PREFIX + json.dumps(result), flush=True)  # for readers without Pipes (bench, `dml job logs`)
        pipes.report_asset_materialization(metadata=result)


if __name__ == "__main__":
    main()
