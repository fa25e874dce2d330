"""Ray job: validate one landed day of impressions with Ray Data and publish its features.

Files that cannot be read as impressions and rows that break a rule are quarantined (copied, with
the reason) and counted; nothing is dropped silently and the landed files are only ever read.
Features and quarantine are each published atomically.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections import Counter
from typing import Any, cast

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray
from dagster_pipes import open_dagster_pipes

from discord_ml.quests.entrypoints import PrepArgs
from discord_ml.quests.lake import Lake, LakeError, parse_date
from discord_ml.quests.ml.features import REASON, FeatureSpec, featurize, schema_problem, split_valid
from discord_ml.quests.tasks.runtime import init_ray


def check_files(lake: Lake, files: list[str]) -> tuple[list[str], list[dict[str, str]]]:
    """(readable impression files, [{file, reason}] for the others)."""
    good, bad = [], []
    for path in files:
        try:
            with lake.filesystem.open_input_file(path) as handle:
                schema = pq.ParquetFile(handle).schema_arrow
        except (OSError, pa.ArrowException) as exc:
            bad.append({"file": path, "reason": f"not a readable Parquet file: {exc}"})
            continue
        if problem := schema_problem(schema):
            bad.append({"file": path, "reason": problem})
        else:
            good.append(path)
    return good, bad


def prep_day(lake: Lake, day_text: str, spec: FeatureSpec, *, log: Any = print) -> dict[str, Any]:
    """Validate one landed day with Ray Data, quarantine bad rows and files, publish its features;
    returns the day's summary."""
    day = parse_date(day_text, field="partition")
    landed = lake.impressions_dir(day)
    if not lake.complete(landed):
        raise LakeError(f"impressions for {day_text} have not landed: no {landed}/_SUCCESS marker")
    files = lake.files(landed)
    good_files, bad_files = check_files(lake, files)
    for item in bad_files:
        log(f"quarantining file {item['file']}: {item['reason']}")
    if not good_files:
        raise LakeError(f"no readable impression file for {day_text} in {landed} ({len(bad_files)} quarantined)")

    raw = ray.data.read_parquet(good_files, filesystem=lake.filesystem).materialize()

    def valid(batch: Any) -> pa.Table:
        return featurize(split_valid(batch)[0], spec)

    def invalid(batch: Any) -> pa.Table:
        return split_valid(batch)[1]

    features = raw.map_batches(valid, batch_format="pyarrow").materialize()
    rejected = raw.map_batches(invalid, batch_format="pyarrow").materialize()
    rows_in, rows_valid, rows_bad = raw.count(), features.count(), rejected.count()
    bad_table = (
        pa.concat_tables(cast(list[pa.Table], list(rejected.iter_batches(batch_format="pyarrow"))))
        if rows_bad
        else None
    )
    reasons = Counter(bad_table[REASON].to_pylist()) if bad_table is not None else Counter()
    log(f"{day_text}: {rows_in} rows in {len(good_files)} file(s); {rows_valid} valid, {rows_bad} quarantined")

    with lake.publish(lake.features_dir(day)) as staging:
        features.write_parquet(staging, filesystem=lake.filesystem)
    with lake.publish(lake.quarantine_dir(day)) as staging:
        if bad_table is not None:
            sink = io.BytesIO()
            pq.write_table(bad_table, sink)
            with lake.filesystem.open_output_stream(f"{staging}/rows.parquet") as out:
                out.write(sink.getvalue())
        if bad_files:
            lake.filesystem.create_dir(f"{staging}/files")
        for item in bad_files:  # a copy: the landed file itself stays where and as it was
            name = item["file"].rsplit("/", 1)[-1]
            lake.filesystem.copy_file(item["file"], f"{staging}/files/{name}")
        summary = {"rows": dict(reasons), "files": bad_files}
        with lake.filesystem.open_output_stream(f"{staging}/summary.json") as out:
            out.write(json.dumps(summary, indent=2).encode())

    # A plain pass over the materialized blocks; Dataset.sum() would plan a shuffle for one number.
    label_sum = sum(pc.sum(b["label"]).as_py() or 0.0 for b in features.iter_batches(batch_format="pyarrow"))
    return {
        "partition": day_text,
        "files": len(files),
        "files_quarantined": len(bad_files),
        "rows_in": rows_in,
        "rows_valid": rows_valid,
        "rows_quarantined": rows_bad,
        "quarantine_reasons": dict(reasons + Counter(f"file: {b['reason']}" for b in bad_files)),
        "label_rate": round(float(label_sum) / max(rows_valid, 1), 5),
        "features_path": lake.features_dir(day),
        "quarantine_path": lake.quarantine_dir(day),
    }


def main() -> None:
    args = PrepArgs.parse()
    with open_dagster_pipes() as pipes:
        init_ray()
        days = [prep_day(Lake(args.root), d, FeatureSpec(), log=lambda m: print(m, flush=True)) for d in args.date]
        pipes.report_asset_materialization(metadata=summarize(days))


def prep_in_process(lake: Lake, day: dt.date) -> pa.Table:
    """The features prep publishes for a day's valid rows, computed in this process without Ray (for
    tests and benchmarks that only need features); the rows prep would quarantine are dropped."""
    valid, _ = split_valid(lake.read_table(lake.files(lake.impressions_dir(day))))
    features = featurize(valid, FeatureSpec())
    with lake.publish(lake.features_dir(day)) as staging:
        sink = io.BytesIO()
        pq.write_table(features, sink)
        with lake.filesystem.open_output_stream(f"{staging}/part-0.parquet") as out:
            out.write(sink.getvalue())
    return features


def summarize(days: list[dict[str, Any]]) -> dict[str, Any]:
    """One materialization's metadata for the days of a (single-run backfill) partition range."""
    totals = {key: sum(d[key] for d in days) for key in ("files", "files_quarantined", "rows_in", "rows_valid",
                                                           "rows_quarantined")}  # fmt: skip
    reasons: Counter[str] = Counter()
    for d in days:
        reasons.update(d["quarantine_reasons"])
    return {
        "partitions": ", ".join(d["partition"] for d in days),
        **totals,
        "quarantine_reasons": {"raw_value": dict(reasons), "type": "json"},
        "label_rate": round(sum(d["label_rate"] * d["rows_valid"] for d in days) / max(totals["rows_valid"], 1), 5),
        "days": {"raw_value": days, "type": "json"},
        "features_path": days[-1]["features_path"].rsplit("/", 1)[0],
    }


if __name__ == "__main__":
    main()
