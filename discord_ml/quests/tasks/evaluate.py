"""Ray job: evaluate a candidate model on its held-out day against the XGBoost baseline trained on
the same window, the production model, random and the oracle (the true probabilities, i.e. the
Bayes limit). Writes metrics and ROC / calibration plots; reports them through Pipes.

Ranking quality is measured where it matters: each of the day's requests is shown the top-1 of
its K candidate quests by model score, and expected participation is the mean *true*
probability of what was shown.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
from typing import Any

import numpy as np
import pyarrow as pa
from dagster_pipes import open_dagster_pipes

from discord_ml.quests.entrypoints import EvaluateArgs
from discord_ml.quests.lake import Lake, LakeError, parse_date
from discord_ml.quests.ml.features import split_valid
from discord_ml.quests.ml.metrics import (
    auc,
    calibration,
    log_loss,
    random_participation,
    roc_curve,
    top1_participation,
)
from discord_ml.quests.ml.scoring import Scorer
from discord_ml.quests.model_registry import ModelRegistry, ModelVersion
from discord_ml.quests.tasks.runtime import init_ray
from discord_ml.quests.tasks.train import read_table, train_xgboost

BASELINE = "xgboost"


def baseline_for(lake: Lake, candidate: ModelVersion, *, log: Any = print) -> ModelVersion:
    """The XGBoost model trained on the candidate's window, training and registering it if needed."""
    registry = ModelRegistry(lake)
    window = {
        "data_window": candidate.card["data_window"],
        "validation_day": candidate.card["validation_day"],
        "holdout_day": candidate.card["holdout_day"],
        "features": candidate.card["features"],
    }
    if candidate.model_name == BASELINE:
        return candidate
    if found := registry.find(BASELINE, **window):
        return found
    log(f"training the {BASELINE} baseline on {', '.join(window['data_window'])}")
    days = [parse_date(d) for d in window["data_window"]]
    summary, files = train_xgboost(lake, days, parse_date(window["validation_day"]))
    card = {
        **window,
        "kind": "xgboost",
        "training": summary,
        "baseline_for": candidate.ref,
        "partition": candidate.card["partition"],
        "window_days": candidate.card["window_days"],
    }
    return registry.register(BASELINE, files, card)


def _read(lake: Lake, path: str) -> pa.Table:
    files = lake.files(path)
    if not files:
        raise LakeError(f"nothing to evaluate on: no Parquet files in {path}")
    return lake.read_table(files)


def evaluate(lake: Lake, candidate: ModelVersion, *, log: Any = print) -> dict[str, Any]:
    """Tables of the validation day (what the promotion gate reads) and of the test day (what is reported:
    nothing was tuned on it), plots of the test day; published under the test day's evaluation dir."""
    test_day = parse_date(candidate.card["holdout_day"])
    validation_day = parse_date(candidate.card["validation_day"])
    registry = ModelRegistry(lake)
    baseline = baseline_for(lake, candidate, log=log)
    production = registry.production()
    models = {"candidate": candidate, "xgboost": baseline}
    if production is not None and production.ref != candidate.ref:
        models["production"] = production
    scorers = {role: Scorer(lake, version) for role, version in models.items()}
    validation = _day(lake, validation_day, scorers)
    test = _day(lake, test_day, scorers)
    plots = {"roc": _roc_png(test["curves"]), "calibration": _calibration_png(test["calibrations"])}
    result = {
        "holdout_day": candidate.card["holdout_day"],
        "validation_day": candidate.card["validation_day"],
        "candidate": candidate.ref,
        "baseline": baseline.ref,
        "production": production.ref if production else None,
        **{k: v for k, v in test.items() if k not in ("curves", "calibrations")},
        "validation_table": validation["table"],
    }
    out = f"{lake.evaluation_dir(test_day)}/{candidate.model_name}-v{candidate.version:04d}"
    with lake.publish(out) as staging:
        for name, data in {
            "metrics.json": json.dumps(result, indent=2).encode(),
            **{f"{k}.png": v for k, v in plots.items()},
        }.items():
            with lake.filesystem.open_output_stream(f"{staging}/{name}") as stream:
                stream.write(data)
    return {**result, "path": out, "plots": plots}


def _day(lake: Lake, day: dt.date, scorers: dict[str, Scorer]) -> dict[str, Any]:
    """Every model's row of the table for one day's impressions and requests, with random and the oracle."""
    impressions = read_table(lake, [day], columns=None).join(
        _read(lake, lake.truth_dir("impressions", day)), "impression_id"
    )
    labels, p_true = impressions["label"].to_numpy(), impressions["p_true"].to_numpy()
    raw_requests = _read(lake, lake.requests_dir(day))
    requests, rejected = split_valid(raw_requests, with_label=False)
    truth = _read(lake, lake.truth_dir("requests", day))
    requests = requests.join(truth, ["request_id", "quest_id"]).sort_by([("request_id", "ascending")])
    request_ids, request_p = requests["request_id"].to_numpy(), requests["p_true"].to_numpy()
    total_requests = len(np.unique(raw_requests["request_id"].to_numpy()))
    # A request is cold-start when its user joined, or one of its candidate quests launched, that day.
    cold_mask = np.zeros(raw_requests.num_rows, dtype=bool)
    for column in ("user_is_new", "quest_is_new"):
        if column in raw_requests.column_names:
            cold_mask |= raw_requests[column].to_numpy(zero_copy_only=False).astype(bool)
    cold_requests = np.unique(raw_requests["request_id"].to_numpy()[cold_mask])

    bayes_auc = auc(labels, p_true)
    rows: dict[str, dict[str, Any]] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    calibrations: dict[str, dict[str, Any]] = {}
    for role, scorer in scorers.items():
        p = scorer.score(impressions)
        request_scores = scorer.score(scorer.featurize(requests))
        scored = np.isfinite(request_scores)
        calibrations[role] = calibration(labels, p)
        curves[role] = roc_curve(labels, p)
        rows[role] = {
            "model": scorer.version.ref,
            "auc": auc(labels, p),
            "log_loss": log_loss(labels, p),
            "ece": calibrations[role]["ece"],
            "expected_participation": top1_participation(request_ids, request_scores, request_p),
            "coverage": len(np.unique(request_ids[scored])) / max(total_requests, 1),
            "cold_start_coverage": _share(cold_requests, request_ids[scored]),
        }
    curves["oracle"] = roc_curve(labels, p_true)
    rows["random"] = {
        "model": "-",
        "auc": 0.5,
        "log_loss": log_loss(labels, np.full(len(labels), labels.mean())),
        "ece": 0.0,
        "expected_participation": random_participation(request_ids, request_p),
        "coverage": 1.0,
        "cold_start_coverage": 1.0,
    }
    rows["oracle"] = {
        "model": "true p (Bayes limit)",
        "auc": bayes_auc,
        "log_loss": log_loss(labels, p_true),
        "ece": calibration(labels, p_true)["ece"],
        "expected_participation": top1_participation(request_ids, request_p, request_p),
        "coverage": 1.0,
        "cold_start_coverage": 1.0,
    }
    xgb_participation = rows["xgboost"]["expected_participation"]
    floor, ceiling = rows["random"]["expected_participation"], rows["oracle"]["expected_participation"]
    for row in rows.values():
        row["auc_lift_share"] = (row["auc"] - 0.5) / (bayes_auc - 0.5) if bayes_auc > 0.5 else float("nan")
        row["participation_vs_xgboost"] = row["expected_participation"] / xgb_participation
        # Share of the oracle's lift over random in expected participation (random 0, oracle 1).
        lift = ceiling - floor
        row["oracle_lift_share"] = (row["expected_participation"] - floor) / lift if lift > 0 else float("nan")
    return {
        "impressions": len(labels),
        "requests": total_requests,
        "requests_rejected": rejected.num_rows,
        "cold_start_requests": len(cold_requests),
        "table": rows,
        "curves": curves,
        "calibrations": calibrations,
    }


def _share(wanted: np.ndarray, covered: np.ndarray) -> float:
    """Share of the `wanted` request IDs among the `covered` ones (1.0 when none is wanted)."""
    return float(np.isin(wanted, covered).mean()) if len(wanted) else 1.0


def _figure() -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(4.2, 3.6), dpi=90)


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _roc_png(curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> bytes:
    fig, ax = _figure()
    for name, (fpr, tpr) in curves.items():
        ax.plot(fpr, tpr, label=name, linestyle="--" if name == "oracle" else "-")
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, label="random")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (held-out day)")
    ax.legend(fontsize=7)
    return _png(fig)


def _calibration_png(calibrations: dict[str, dict[str, Any]]) -> bytes:
    fig, ax = _figure()
    top = 0.0
    for name, c in calibrations.items():
        ax.plot(c["bins_predicted"], c["bins_observed"], marker="o", markersize=3, label=name)
        top = max(top, *c["bins_predicted"], *c["bins_observed"])
    ax.plot([0, top], [0, top], color="grey", linewidth=0.8, label="perfect")
    ax.set(xlabel="predicted participation", ylabel="observed participation", title="Calibration (deciles)")
    ax.legend(fontsize=7)
    return _png(fig)


def markdown_table(rows: dict[str, dict[str, Any]]) -> str:
    """The evaluation table as Markdown (the materialization's `quality`)."""
    head = ("| | model | AUC | AUC lift / Bayes | log loss | ECE | expected participation | share of oracle lift "
            "| vs XGBoost | coverage | cold-start coverage |")  # fmt: skip
    lines = [head, "|---" * 11 + "|"]
    for role, r in rows.items():
        lines.append(
            f"| {role} | {r['model']} | {r['auc']:.4f} | {r['auc_lift_share']:.1%} | {r['log_loss']:.4f} | "
            f"{r['ece']:.4f} | {r['expected_participation']:.4f} | {r.get('oracle_lift_share', float('nan')):.1%} | "
            f"{r['participation_vs_xgboost']:.2f}x | {r['coverage']:.1%} | {r['cold_start_coverage']:.1%} |"
        )
    return "\n".join(lines)


def main() -> None:
    """The Ray job: evaluate the candidate against the baselines and report through Dagster Pipes."""
    args = EvaluateArgs.parse()
    with open_dagster_pipes() as pipes:
        init_ray()
        lake = Lake(args.root)
        result = evaluate(lake, ModelRegistry(lake).get(args.candidate), log=pipes.log.info)
        table = result["table"]
        print(markdown_table(table), flush=True)
        images = "\n\n".join(
            f"![{name}](data:image/png;base64,{base64.b64encode(png).decode()})"
            for name, png in result["plots"].items()
        )
        metadata: dict[str, Any] = {
            "candidate": result["candidate"],
            "baseline": result["baseline"],
            "production": result["production"] or "none",
            "holdout_day": result["holdout_day"],
            "validation_day": result["validation_day"],
            "cold_start_requests": result["cold_start_requests"],
            "evaluation_path": result["path"],
            "quality": {"raw_value": markdown_table(table), "type": "md"},
            "plots": {"raw_value": images, "type": "md"},
            "table_json": {"raw_value": table, "type": "json"},
            "validation_table_json": {"raw_value": result["validation_table"], "type": "json"},
        }
        for role in ("candidate", "xgboost", "production", "oracle", "random"):
            for key in ("auc", "log_loss", "expected_participation", "coverage"):
                if role in table:
                    metadata[f"{role}_{key}"] = round(float(table[role][key]), 5)
        pipes.report_asset_materialization(metadata=metadata)


if __name__ == "__main__":
    main()
