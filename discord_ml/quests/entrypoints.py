"""The quests pipeline's Ray jobs, as typed entrypoints: each is the job's parser (`parse`, in the job)
and the builder of its command (`command`, in the asset that submits it), with one set of defaults
that the Launchpad config (`quests.config`) shares."""

from __future__ import annotations

from typing import ClassVar

from discord_ml.jobs.entrypoint import Entrypoint, arg

MODELS = ("dlrm", "dcn_v2", "xgboost")
MAX_PART_ROWS = 131_072  # rows a scoring actor holds at a time: bounded memory whatever the day's size


class PrepArgs(Entrypoint):
    """Validate, quarantine and featurize landed days."""

    MODULE: ClassVar[str] = "discord_ml.quests.tasks.prep"
    root: str = arg(help="data root (path or URL)")
    date: list[str] = arg(help="landed day, YYYY-MM-DD (repeatable)")


class TrainArgs(Entrypoint):
    """Train one model on a window of days and register it."""

    MODULE: ClassVar[str] = "discord_ml.quests.tasks.train"
    root: str = arg(help="data root (path or URL)")
    date: str = arg(help="partition: the last day of the window, YYYY-MM-DD")
    window: int = arg(default=4, help="days in the window: training days, then validation, test")
    model: str = arg(default="dlrm", help="model to train", choices=MODELS)
    workers: int = arg(default=2, help="Ray Train workers, one per node")
    epochs: int = arg(default=5, help="passes over the training days")
    batch_size: int = arg(default=2048, help="rows per step on each worker")
    learning_rate: float = arg(default=0.01, help="Adam step of the dense layers (epoch 0)")
    sparse_learning_rate: float = arg(default=0.5, help="row-wise Adagrad step of the tables (epoch 0)")
    embedding_dim: int = arg(default=16, help="width of every embedding table")
    rounds: int = arg(default=300, help="xgboost boosting rounds (early-stopped)")
    device: str = arg(default="auto", help="where the model trains", choices=("auto", "cpu", "gpu"))
    run_id: str = arg(default="manual", help="names the run's storage for checkpoints")
    fail_once_at_epoch: int | None = arg(default=None, help="failure drill: kill a worker once at this epoch")


class EvaluateArgs(Entrypoint):
    """Evaluate a registered candidate against the baseline and production."""

    MODULE: ClassVar[str] = "discord_ml.quests.tasks.evaluate"
    root: str = arg(help="data root (path or URL)")
    candidate: str = arg(help="model version to evaluate, e.g. dlrm/v0003")


class InferenceArgs(Entrypoint):
    """Score a serving day's requests with a model."""

    MODULE: ClassVar[str] = "discord_ml.quests.tasks.inference"
    root: str = arg(help="data root (path or URL)")
    date: str = arg(help="serving day whose requests are scored, YYYY-MM-DD")
    model: str | None = arg(default=None, help="model version (default: the production model)")
    top_k: int = arg(default=3, help="quests recommended per request")
    actors: int = arg(default=2, help="scoring actors, one CPU (or GPU) each")
    max_part_rows: int = arg(default=MAX_PART_ROWS, help="rows an actor scores at a time")
