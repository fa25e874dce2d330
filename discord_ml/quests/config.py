"""Run config of the quests pipeline. Closed sets are enums, so the Launchpad rejects a bad value
before launch; the rest is range-checked by pydantic when the step starts and cross-checked
(`check_train_config`) before any cluster is created."""

from enum import StrEnum

import dagster as dg
from pydantic import Field, model_validator

from discord_ml.cluster.pools import get_catalog
from discord_ml.quests.entrypoints import InferenceArgs, TrainArgs

TRAIN = TrainArgs(root="", date="")  # the jobs' defaults are the Launchpad's
INFERENCE = InferenceArgs(root="", date="")


class ModelName(StrEnum):
    """Models the pipeline can train; `xgboost` is also the baseline every candidate must beat."""

    dlrm = "dlrm"
    dcn_v2 = "dcn_v2"
    xgboost = "xgboost"


# Built from the pool catalog (DML_POOLS_FILE) when the code location loads; its first pool is the default.
_POOLS = get_catalog().names
GpuPoolName = StrEnum("GpuPoolName", {name: name for name in _POOLS})


class TrainConfig(dg.Config):
    """What to train, on which days, on what hardware."""

    model_name: ModelName = Field(default=ModelName(TRAIN.model), description="dlrm, dcn_v2 or xgboost.")
    data_window: int = Field(
        default=TRAIN.window,
        ge=3,
        le=60,
        description="Days of features ending at the partition date: training days, then a validation day (early "
        "stopping, the promotion gate), then the test day (only reported).",
    )
    gpu_pool: GpuPoolName = Field(  # pyright: ignore[reportInvalidTypeForm]
        default=next(iter(GpuPoolName)), description="GPU pool of the training cluster's workers (see `dml pools`)."
    )
    workers: int = Field(
        default=TRAIN.workers, ge=1, le=64, description="Training workers: one Ray Train worker per node."
    )
    epochs: int = Field(default=TRAIN.epochs, ge=1, le=100, description="Passes over the window's training days.")
    batch_size: int = Field(default=TRAIN.batch_size, ge=32, le=1 << 20, description="Rows per step on each worker.")
    learning_rate: float = Field(
        default=TRAIN.learning_rate, gt=0, le=1.0, description="Adam step size of the dense layers in the first epoch."
    )
    sparse_learning_rate: float = Field(
        default=TRAIN.sparse_learning_rate,
        gt=0,
        le=10.0,
        description="Row-wise Adagrad step of the embedding tables in the first epoch.",
    )
    embedding_dim: int = Field(default=TRAIN.embedding_dim, ge=2, le=512, description="Width of every embedding table.")
    fail_once_at_epoch: int | None = Field(
        default=None,
        ge=0,
        description="Failure drill: kill one training worker once at the start of this epoch (resumes from the "
        "last checkpoint).",
    )

    @model_validator(mode="after")
    def _drill_within_epochs(self) -> "TrainConfig":
        if self.fail_once_at_epoch is not None and not 0 < self.fail_once_at_epoch < self.epochs:
            raise ValueError(
                f"fail_once_at_epoch {self.fail_once_at_epoch} must be after the first checkpoint and before the end: "
                f"1..{self.epochs - 1} for epochs={self.epochs}"
            )
        return self


class InferenceConfig(dg.Config):
    """How the batch scoring job runs."""

    top_k: int = Field(default=INFERENCE.top_k, ge=1, le=50, description="Quests recommended per request.")
    actors: int = Field(
        default=INFERENCE.actors, ge=1, le=256, description="Scoring actors in the Ray Data actor pool."
    )


class PrepConfig(dg.Config):
    """Prep has nothing to tune; present so the Launchpad documents it."""

    max_quarantine_share: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Share of quarantined rows above which the quarantine asset check warns.",
    )
