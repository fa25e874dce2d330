"""Batch inference: cut into parts that split requests, scored by an actor pool on a real local Ray
cluster, and still exactly the top K a single process computes over the whole day."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from discord_ml.cluster.local.nodes import LocalRayCluster
from discord_ml.jobs.client import RayJobs
from discord_ml.quests.entrypoints import InferenceArgs, TrainArgs
from discord_ml.quests.lake import Lake, LakeError
from discord_ml.quests.ml.features import split_valid
from discord_ml.quests.ml.scoring import Scorer
from discord_ml.quests.ml.world import generate
from discord_ml.quests.model_registry import ModelRegistry
from discord_ml.quests.tasks.inference import RESULT_PREFIX, _merge, plan_parts, top_k
from discord_ml.quests.tasks.prep import prep_in_process
from discord_ml_tests.support.quests import START, tiny


def _report(edges: pa.Table, interior: list[int]) -> dict[str, bytes]:
    sink = io.BytesIO()
    pq.write_table(edges, sink)
    return {"edges": sink.getvalue(), "interior": np.array(interior, dtype=np.int64).tobytes()}


def _scored(request_ids: list[int], scores: list[float]) -> pa.Table:
    n = len(request_ids)
    return pa.table({"request_id": pa.array(request_ids, pa.int64()), "user_id": pa.array([1] * n, pa.int64()),
                     "quest_id": pa.array(range(n), pa.int64()), "score": pa.array(scores, pa.float32())})  # fmt: skip


def test_a_request_cut_between_two_parts_is_ranked_over_all_its_candidates() -> None:
    first = _report(_scored([7, 7], [0.1, 0.9]), interior=[5, 6])  # request 7 starts at the end of part 1 ...
    second = _report(_scored([7, 7], [0.5, 0.2]), interior=[8])  # ... and ends at the start of part 2
    best, interior = _merge([first, second], k=2)
    assert interior == 3
    assert best["score"].to_pylist() == pytest.approx([0.9, 0.5]) and best["rank"].to_pylist() == [1, 2]


def test_rows_of_one_request_scattered_over_the_files_are_refused() -> None:
    with pytest.raises(LakeError, match="request 5 has candidate rows in several parts"):
        _merge([_report(_scored([], []), [5]), _report(_scored([], []), [5])], k=3)


def test_parts_cover_every_row_once_with_two_per_actor(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    table = pa.table({"x": pa.array(np.arange(1000))})
    for name in ("a", "b"):
        pq.write_table(table, tmp_path / f"{name}.parquet", row_group_size=300)  # groups of 300, 300, 300, 100
    parts, total = plan_parts(lake, [str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")], actors=3)
    assert total == 2000 and len(parts) >= 6
    covered = sorted((p.file, p.row_group * 300 + r) for p in parts for r in range(p.start, p.stop))
    assert covered == sorted((str(tmp_path / f"{n}.parquet"), r) for n in ("a", "b") for r in range(1000))


@pytest.mark.integration
def test_the_actor_pool_gives_exactly_the_top_k_of_one_process(local_cluster: LocalRayCluster, tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    generate(lake, days=3, config=tiny())
    for i in range(3):
        prep_in_process(lake, START + dt.timedelta(days=i))
    serving = "2026-11-04"
    lines: list[str] = []
    for entrypoint in (
        TrainArgs(root=lake.root, date="2026-11-03", window=3, model="xgboost").command(),
        # 333 rows a part: cuts fall inside slates of 8 candidates
        InferenceArgs(
            root=lake.root, date=serving, model="xgboost/v0001", actors=2, top_k=3, max_part_rows=333
        ).command(),
    ):
        jobs = RayJobs(local_cluster.dashboard_url, headers=local_cluster.auth_headers())
        outcome = jobs.submit_and_follow(entrypoint=entrypoint, on_line=lines.append)
        assert outcome.status == "SUCCEEDED", "\n".join(lines[-30:])
    [line] = [x for x in lines if x.startswith(RESULT_PREFIX)]
    summary = json.loads(line.removeprefix(RESULT_PREFIX))
    requests = lake.read_table(lake.files(lake.requests_dir(dt.date(2026, 11, 4))))
    assert summary["parts"] >= requests.num_rows // 333 and summary["coverage"] == 1.0
    assert summary["actor_startup_s"] > 0 and summary["rows_per_s_per_actor"] > 0

    scorer = Scorer(lake, ModelRegistry(lake).get("xgboost/v0001"))
    valid, _ = split_valid(requests, with_label=False)
    scored = valid.select(["request_id", "user_id", "quest_id"]).append_column(
        "score", pa.array(scorer.score(scorer.featurize(valid)), pa.float32())
    )
    expected = top_k(scored, 3).sort_by([("request_id", "ascending"), ("rank", "ascending")])
    actual = lake.read_table(lake.files(lake.recommendations_dir(dt.date(2026, 11, 4))))
    actual = actual.sort_by([("request_id", "ascending"), ("rank", "ascending")])
    columns = ["request_id", "quest_id", "rank"]
    assert actual.select(columns).to_pylist() == expected.select(columns).to_pylist()
