"""Ray job: score a day's serving requests with the production model and publish the top-K quests
of every request.

Scoring is Ray Data `map_batches` over an actor pool (each actor loads the model once; one GPU
per actor when the cluster has GPUs). Every request gets recommendations: IDs are hashed, so
cold-start users and quests are scored like any other; invalid request rows are counted.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
from dagster_pipes import open_dagster_pipes

from discord_ml.lake import Lake, LakeError, parse_date
from discord_ml.ml.features import split_valid
from discord_ml.ml.runtime import init_ray
from discord_ml.ml.scoring import Scorer
from discord_ml.registry import ModelRegistry, ModelVersion

RESULT_PREFIX = "recommendations: "
OUTPUT_COLUMNS = ["request_id", "user_id", "quest_id", "score"]


class ScoreBatch:
    """One actor of the pool: the model stays loaded across batches."""

    def __init__(self, root: str, ref: str, device: str) -> None:
        lake = Lake(root)
        self.scorer = Scorer(lake, ModelRegistry(lake).get(ref), device=device)

    def __call__(self, batch: pa.Table) -> pa.Table:
        valid, _ = split_valid(batch, with_label=False)
        scores = self.scorer.score(self.scorer.featurize(valid))
        return valid.select(OUTPUT_COLUMNS[:-1]).append_column("score", pa.array(scores, pa.float32()))


def top_k(scored: pa.Table, k: int) -> pa.Table:
    """The k best candidates of every request, ranked 1..k."""
    ordered = scored.sort_by([("request_id", "ascending"), ("score", "descending")])
    request_ids = ordered["request_id"].to_numpy()
    starts = np.r_[0, np.flatnonzero(request_ids[1:] != request_ids[:-1]) + 1]
    rank = np.arange(len(request_ids)) - np.repeat(starts, np.diff(np.r_[starts, len(request_ids)])) + 1
    keep = rank <= k
    return ordered.filter(pa.array(keep)).append_column("rank", pa.array(rank[keep], pa.int16()))


def recommend(lake: Lake, day_text: str, version: ModelVersion, *, k: int, actors: int, log: Any = print) -> dict:
    """Score requests of `day_text` with `version`; publish recommendations for that day."""
    day = parse_date(day_text, field="serving day")
    files = lake.files(lake.requests_dir(day))
    if not files:
        raise LakeError(f"no serving requests for {day_text} in {lake.requests_dir(day)}: has that day's slate landed?")
    gpus = ray.cluster_resources().get("GPU", 0)
    started = time.perf_counter()
    # Read before the actor pool exists: the pool holds CPUs the read tasks would wait for.
    requests = ray.data.read_parquet(files, filesystem=lake.filesystem).materialize()
    total = requests.count()
    scored = requests.map_batches(
        ScoreBatch,
        fn_constructor_args=(lake.root, version.ref, "cuda" if gpus else "cpu"),
        batch_format="pyarrow",
        batch_size=8192,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_gpus=1 if gpus else 0,
        num_cpus=0.5,
    )
    table = pa.concat_tables(cast(list[pa.Table], list(scored.iter_batches(batch_format="pyarrow", batch_size=None))))
    seconds = time.perf_counter() - started
    best = top_k(table, k)
    ids = [
        cast(pa.Table, b)["request_id"].to_numpy()
        for b in requests.select_columns(["request_id"]).iter_batches(batch_format="pyarrow", batch_size=None)
    ]
    request_count = len(np.unique(np.concatenate(ids))) if ids else 0
    covered = len(pc.unique(best["request_id"]))
    log(f"scored {table.num_rows} of {total} candidate rows in {seconds:.1f}s with {actors} actor(s)")
    with lake.publish(lake.recommendations_dir(day)) as staging:
        ray.data.from_arrow(best).write_parquet(staging, filesystem=lake.filesystem)
    return {
        "serving_day": day_text,
        "model_version": version.ref,
        "candidate_rows": total,
        "rows_scored": table.num_rows,
        "requests": request_count,
        "requests_with_recommendations": covered,
        "coverage": covered / max(request_count, 1),
        "top_k": k,
        "rows_per_s": round(table.num_rows / seconds, 1),
        "actors": actors,
        "device": "gpu" if gpus else "cpu",
        "recommendations_path": lake.recommendations_dir(day),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", required=True, help="data root (path or URL)")
    parser.add_argument("--date", required=True, help="serving day whose requests are scored, YYYY-MM-DD")
    parser.add_argument("--model", default=None, help="model version (default: the production model)")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--actors", type=int, default=2)
    args = parser.parse_args()
    with open_dagster_pipes() as pipes:
        init_ray()
        lake = Lake(args.root)
        registry = ModelRegistry(lake)
        version = registry.get(args.model) if args.model else registry.production()
        if version is None:
            raise LakeError("no production model yet: promote one (production_model) or pass --model")
        result = recommend(lake, args.date, version, k=args.top_k, actors=args.actors, log=pipes.log.info)
        print(RESULT_PREFIX + json.dumps(result), flush=True)  # for readers without Pipes (bench, `dml job logs`)
        pipes.report_asset_materialization(metadata=result)


if __name__ == "__main__":
    main()
