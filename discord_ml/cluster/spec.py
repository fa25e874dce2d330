"""ClusterSpec: the few parameters a user gives, validated against the pool catalog.

`ClusterSpec.build(...)` (or `model_validate` with a `{"catalog": ...}` context) resolves every
default (pool shorthand, GPU count, CPU, memory, image) so that the validated spec is complete
and a manifest can be built from it without further lookups.
"""

from __future__ import annotations

import getpass
import secrets
from decimal import Decimal
from enum import StrEnum
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from discord_ml.cluster.duration import format_duration, parse_duration
from discord_ml.cluster.images import image_problem
from discord_ml.cluster.names import (
    ENV_NAME,
    check_cluster_name,
    check_label_key,
    check_label_value,
    check_namespace,
    check_subdomain,
    sanitize_label_value,
)
from discord_ml.cluster.pools import GpuPool, PoolCatalog, PoolError, get_catalog
from discord_ml.cluster.quantity import format_bytes, format_cpu, parse_quantity
from discord_ml.settings import get_settings

MIN_TTL_SECONDS = 10 * 60
MIN_IDLE_SECONDS = 5 * 60
MAX_TTL_SECONDS = 7 * 24 * 3600
MIN_MEMORY = 512 * 2**20
RESERVED_LABEL_PREFIXES = ("discord-ml.io/", "app.kubernetes.io/", "ray.io/", "dagster.io/")
RESERVED_ENV_PREFIXES = ("RAY_AUTH_",)


class Purpose(StrEnum):
    """What a cluster is for; shown in X-Ray and used for cost reports."""

    TRAIN = "train"
    EVAL = "eval"
    INFERENCE = "inference"
    NOTEBOOK = "notebook"
    ADHOC = "adhoc"


STORED = "stored"  # validation context of a spec read back from a registry


class SpecError(ValueError):
    """A cluster spec is invalid; the message lists each field, its value and the fix."""


class ClusterSpec(BaseModel):
    """A Ray cluster described by the parameters users care about."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    name: str | None = Field(
        default=None,
        description="Cluster name (RFC 1035 label, <= 47 chars); generated from owner and purpose when empty.",
    )
    namespace: str | None = Field(default=None, description="Kubernetes namespace; default from DML_NAMESPACE.")
    owner: str = Field(
        default_factory=lambda: sanitize_label_value(getpass.getuser()),
        description="Who owns the cluster (label value); defaults to the current user.",
    )
    team: str = Field(default="ml", description="Owning team (label value), for quotas and cost reports.")
    purpose: Purpose = Field(default=Purpose.ADHOC, description="train, eval, inference, notebook or adhoc.")
    gpu_pool: str = Field(default="cpu", description="Pool name or SkyPilot-style `pool:gpus`, e.g. `h100:8`.")
    workers: int = Field(default=1, ge=0, description="Worker replicas (the starting size when autoscaling).")
    min_workers: int | None = Field(default=None, ge=0, description="Autoscaling lower bound; set with max_workers.")
    max_workers: int | None = Field(default=None, ge=1, description="Autoscaling upper bound; enables autoscaling.")
    gpus_per_worker: int | None = Field(
        default=None, ge=0, description="GPUs per worker (requests == limits); default: a whole node of the pool."
    )
    worker_cpu: str | None = Field(default=None, description="CPU per worker (quantity); default from the pool.")
    worker_memory: str | None = Field(default=None, description="Memory per worker (quantity); default from the pool.")
    head_cpu: str = Field(default="2", description="CPU of the head pod (quantity); the head runs no tasks.")
    head_memory: str = Field(default="8Gi", description="Memory of the head pod (quantity).")
    image: str | None = Field(
        default=None, description="Ray image (allow-listed registry, pinned tag); default from settings."
    )
    ray_version: str = Field(
        default="2.60.0", description="Ray version in the image, for KubeRay's compatibility logic."
    )
    ttl: str | int = Field(
        default="8h", description="How long the cluster may live before the sweeper deletes it (10m..7d)."
    )
    idle_timeout: str | int | None = Field(
        default=None,
        description="How long the cluster may sit idle (no Ray job, busy notebook kernel or Dagster step) before the "
        "sweeper deletes it (5m..7d, or 'off'); default: the pool's.",
    )
    labels: dict[str, str] = Field(default_factory=dict, description="Extra labels on the cluster and its pods.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Extra annotations on the cluster.")
    service_account: str | None = Field(
        default=None, description="ServiceAccount for Ray pods; its token is mounted only where autoscaling needs it."
    )
    env: dict[str, str] = Field(default_factory=dict, description="Environment variables for every Ray container.")
    dagster_run_id: str | None = Field(default=None, description="Dagster run that owns the cluster (label), if any.")
    dagster_job: str | None = Field(default=None, description="Dagster job of that run (label), if any.")

    # --- single-field checks ----------------------------------------------------------------

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return None if value is None else check_cluster_name(value)

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str | None) -> str:
        return check_namespace(value or get_settings().default_namespace)

    @field_validator("owner", "team")
    @classmethod
    def _label_fields(cls, value: str, info: ValidationInfo) -> str:
        return check_label_value(value, field=str(info.field_name))

    @field_validator("worker_cpu", "worker_memory", "head_cpu", "head_memory")
    @classmethod
    def _quantities(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        amount = parse_quantity(value, field=str(info.field_name))
        if amount <= 0:
            raise ValueError(f"{info.field_name} {value!r} must be greater than zero")
        if str(info.field_name).endswith("memory") and amount < MIN_MEMORY:
            raise ValueError(f"{info.field_name} {value!r} is below Ray's minimum; use at least 512Mi")
        return value

    @field_validator("image")
    @classmethod
    def _image(cls, value: str | None, info: ValidationInfo) -> str:
        image = value or get_settings().default_image
        if value and (info.context or {}).get(STORED):
            return value  # admitted when the cluster was created; a later policy change must not hide it
        problem = image_problem(image, get_settings().allowed_registries)
        if problem:
            raise ValueError(f"image {problem}")
        return image

    @field_validator("ray_version")
    @classmethod
    def _ray_version(cls, value: str) -> str:
        parts = value.split(".")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise ValueError(f"ray_version {value!r} must look like '2.60.0'")
        return value

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, value: str | int) -> str:
        seconds = parse_duration(value, field="ttl")
        if not MIN_TTL_SECONDS <= seconds <= MAX_TTL_SECONDS:
            raise ValueError(f"ttl {value!r} is outside the allowed range; use between 10m and 7d")
        return format_duration(seconds)

    @field_validator("idle_timeout")
    @classmethod
    def _idle_timeout(cls, value: str | int | None) -> str | None:
        if value is None or value == "off":
            return None if value is None else "off"
        seconds = parse_duration(value, field="idle_timeout")
        if not MIN_IDLE_SECONDS <= seconds <= MAX_TTL_SECONDS:
            raise ValueError(f"idle_timeout {value!r} is outside the allowed range; use between 5m and 7d, or 'off'")
        return format_duration(seconds)

    @field_validator("labels", "annotations")
    @classmethod
    def _metadata(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        for key, val in value.items():
            check_label_key(key, field=str(info.field_name))
            if key.startswith(RESERVED_LABEL_PREFIXES):
                raise ValueError(
                    f"{info.field_name} key {key!r} is reserved for the platform; "
                    f"use your own prefix, e.g. 'team.example/{key.rsplit('/', 1)[-1]}'"
                )
            if info.field_name == "labels":
                check_label_value(val, field=f"labels[{key}]")
        return value

    @field_validator("service_account")
    @classmethod
    def _service_account(cls, value: str | None) -> str | None:
        return None if value is None else check_subdomain(value, field="service_account")

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not ENV_NAME.match(key):
                raise ValueError(f"env name {key!r} is not a valid variable name; use letters, digits and '_'")
            if key.startswith(RESERVED_ENV_PREFIXES):
                raise ValueError(f"env {key!r} is managed by the platform (Ray token auth); remove it")
        return value

    @field_validator("dagster_run_id", "dagster_job")
    @classmethod
    def _dagster(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else check_label_value(value, field=str(info.field_name))

    # --- cross-field checks against the pool ------------------------------------------------

    @model_validator(mode="after")
    def _resolve_against_pool(self, info: ValidationInfo) -> Self:
        context = info.context if isinstance(info.context, dict) else {}
        catalog: PoolCatalog = context.get("catalog") or get_catalog()
        try:
            pool, shorthand_gpus = catalog.resolve(self.gpu_pool)
        except PoolError as exc:
            raise ValueError(str(exc)) from None
        self.gpu_pool = pool.name
        self._resolve_gpus(pool, shorthand_gpus)
        self._resolve_workers(pool)
        gpus = self.gpus_per_worker or 0
        self.worker_cpu = self.worker_cpu or pool.default_cpu(gpus)
        self.worker_memory = self.worker_memory or pool.default_memory(gpus)
        self.idle_timeout = self.idle_timeout or pool.idle_timeout
        _fits(pool, "worker_cpu", self.worker_cpu, pool.node_cpu, pool.cpu_per_node)
        _fits(pool, "worker_memory", self.worker_memory, pool.node_memory, pool.memory_per_node)
        if self.name is None:
            self.name = _generate_name(self.owner, self.purpose)
        return self

    def _resolve_gpus(self, pool: GpuPool, shorthand_gpus: int | None) -> None:
        if shorthand_gpus is not None and self.gpus_per_worker not in (None, shorthand_gpus):
            raise ValueError(
                f"gpu_pool {self.gpu_pool!r} asks for {shorthand_gpus} GPUs but gpus_per_worker is "
                f"{self.gpus_per_worker}; give the count once"
            )
        gpus = shorthand_gpus if shorthand_gpus is not None else self.gpus_per_worker
        if not pool.has_gpus:
            if gpus:
                raise ValueError(
                    f"gpus_per_worker {gpus} asked of pool {pool.name!r}, which has no GPUs; "
                    "pick a GPU pool (see `dml pools`)"
                )
            self.gpus_per_worker = 0
            return
        if gpus is None:
            gpus = pool.gpus_per_node
        if gpus == 0:
            raise ValueError(f"gpus_per_worker 0 in GPU pool {pool.name!r}; use the 'cpu' pool for CPU-only workers")
        if gpus > pool.gpus_per_node:
            raise ValueError(
                f"gpus_per_worker {gpus} does not fit one {pool.name} node ({pool.gpus_per_node} GPUs); "
                f"use at most {pool.gpus_per_node} per worker and add workers instead"
            )
        self.gpus_per_worker = gpus

    def _resolve_workers(self, pool: GpuPool) -> None:
        autoscaling = self.max_workers is not None or self.min_workers is not None
        if autoscaling:
            if self.max_workers is None or self.min_workers is None:
                raise ValueError("min_workers and max_workers go together; set both to autoscale, or neither")
            if self.min_workers > self.max_workers:
                raise ValueError(
                    f"min_workers {self.min_workers} is greater than max_workers {self.max_workers}; swap them"
                )
            if "workers" not in self.model_fields_set:
                self.workers = self.min_workers
            if not self.min_workers <= self.workers <= self.max_workers:
                raise ValueError(
                    f"workers {self.workers} is outside min_workers..max_workers "
                    f"({self.min_workers}..{self.max_workers}); set it inside that range"
                )
        top = self.max_workers if self.max_workers is not None else self.workers
        if top > pool.max_workers:
            field = "max_workers" if self.max_workers is not None else "workers"
            raise ValueError(
                f"{field} {top} exceeds the {pool.name} pool's limit of {pool.max_workers} workers; "
                f"use at most {pool.max_workers}"
            )

    # --- derived values -----------------------------------------------------------------------

    @property
    def autoscaling(self) -> bool:
        """Whether KubeRay's autoscaler manages the worker count."""
        return self.max_workers is not None

    @property
    def ttl_seconds(self) -> int:
        """The TTL in seconds."""
        return parse_duration(self.ttl, field="ttl")

    @property
    def idle_timeout_seconds(self) -> int | None:
        """Idle seconds before the sweeper deletes the cluster; None: never for idleness."""
        if self.idle_timeout in (None, "off"):
            return None
        return parse_duration(self.idle_timeout, field="idle_timeout")

    @property
    def cluster_name(self) -> str:
        """The (resolved) cluster name."""
        assert self.name is not None, "resolved by validation"
        return self.name

    def pool(self, catalog: PoolCatalog | None = None) -> GpuPool:
        """The resolved pool of this spec."""
        return (catalog or get_catalog()).get(self.gpu_pool)

    @classmethod
    def build(cls, catalog: PoolCatalog | None = None, **fields: Any) -> ClusterSpec:
        """Validate `fields` into a spec.

        Raises:
            SpecError: one line per invalid field, naming the field, the value and the fix.
        """
        try:
            return cls.model_validate(fields, context={"catalog": catalog} if catalog else None)
        except ValidationError as exc:
            raise SpecError(format_validation_error(exc)) from None


def _fits(pool: GpuPool, field: str, value: str, node_amount: Decimal, node_text: str) -> None:
    if parse_quantity(value, field=field) > node_amount:
        raise ValueError(
            f"{field} {value!r} does not fit one {pool.name} node ({node_text} allocatable); "
            f"ask for at most {node_text}, or use more workers"
        )


def _generate_name(owner: str, purpose: Purpose) -> str:
    stem = sanitize_label_value(owner).lower().replace("_", "-").replace(".", "-")
    stem = "".join(ch for ch in stem if ch.isalnum() or ch == "-").strip("-")
    if not stem or not stem[0].isalpha():
        stem = f"u{stem}"
    return f"{stem[:28].rstrip('-')}-{purpose.value}-{secrets.token_hex(3)}"


def format_validation_error(exc: ValidationError) -> str:
    """One line per error: `field: message` (pydantic's 'Value error, ' prefix removed)."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown field {loc!r}; check the spelling (see the ClusterSpec fields)"
        elif loc and not msg.startswith(loc.split(".")[0]):
            msg = f"{loc} {err.get('input')!r}: {msg}"
        lines.append(msg)
    return "invalid cluster spec: " + "; ".join(lines)


def normalized_cpu(value: str) -> str:
    """A CPU quantity in canonical form (`2`, `500m`)."""
    return format_cpu(parse_quantity(value))


def normalized_memory(value: str) -> str:
    """A memory quantity in canonical binary form when exact (`64Gi`)."""
    return format_bytes(parse_quantity(value))
