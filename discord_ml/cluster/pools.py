"""The GPU pool catalog: which machines a cluster may ask for, and how big their nodes are.

The catalog is a YAML file shipped with the package (`discord_ml/data/pools.yaml`); a deployment
replaces it with `DML_POOLS_FILE`. Pure code: no network, no heavy imports.
"""

from __future__ import annotations

import functools
import re
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from discord_ml.cluster.quantity import format_bytes, format_cpu, parse_quantity
from discord_ml.settings import get_settings

_POOL_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]?$")


class PoolError(ValueError):
    """A pool name, shorthand or catalog file is invalid."""


class Toleration(BaseModel):
    """A Kubernetes toleration put on every pod that runs on the pool's nodes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(description="Taint key to tolerate, e.g. `nvidia.com/gpu`.")
    operator: Literal["Exists", "Equal"] = Field(default="Exists", description="`Exists` or `Equal`.")
    value: str | None = Field(default=None, description="Taint value, only with operator `Equal`.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default="NoSchedule", description="Taint effect to tolerate; empty tolerates every effect."
    )

    def to_k8s(self) -> dict[str, str]:
        """The toleration as it appears in a pod spec."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class GpuPool(BaseModel):
    """One pool of identical nodes: its accelerator, node size and scheduling constraints."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Short pool name users type (`h100`), lowercase.")
    description: str = Field(default="", description="One line shown by `dml pools`.")
    accelerator: str | None = Field(
        default=None, description="Accelerator type label, e.g. `nvidia-h100-80gb`; empty for CPU pools."
    )
    resource_key: str | None = Field(
        default=None, description="Kubernetes extended resource of the GPU, e.g. `nvidia.com/gpu`, `amd.com/gpu`."
    )
    ray_resource: str | None = Field(
        default=None, description="Ray custom resource advertised per GPU (e.g. `H100`) so tasks can pin a GPU type."
    )
    gpus_per_node: int = Field(default=0, ge=0, le=16, description="GPUs on one node of the pool.")
    cpu_per_node: str = Field(description="Allocatable CPU of one node (Kubernetes quantity, e.g. `200`).")
    memory_per_node: str = Field(description="Allocatable memory of one node (Kubernetes quantity, e.g. `1800Gi`).")
    default_worker_cpu: str | None = Field(
        default=None, description="Worker CPU when a spec gives none; default: the GPU share of the node."
    )
    default_worker_memory: str | None = Field(
        default=None, description="Worker memory when a spec gives none; default: the GPU share of the node."
    )
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels pods must match.")
    tolerations: tuple[Toleration, ...] = Field(default=(), description="Tolerations for the pool's taints.")
    max_workers: int = Field(ge=1, le=1000, description="Most workers one cluster may have in this pool.")
    priority_class: str | None = Field(default=None, description="PriorityClass of the pool's pods, if any.")
    kueue_queue: str | None = Field(default=None, description="Kueue LocalQueue clusters of this pool are queued on.")
    idle_timeout: str | None = Field(
        default=None, description="Idle time after which the sweeper deletes a cluster of this pool (e.g. `30m`)."
    )
    price_per_node_hour: float | None = Field(
        default=None, ge=0, description="What one node of the pool costs per hour (set by operators; cost estimates)."
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _POOL_NAME.match(value):
            raise ValueError(f"pool name {value!r} must be lowercase letters, digits and '-', starting with a letter")
        return value

    @field_validator("cpu_per_node", "memory_per_node", "default_worker_cpu", "default_worker_memory")
    @classmethod
    def _check_quantity(cls, value: str | None, info: object) -> str | None:
        if value is not None:
            parse_quantity(value, field=getattr(info, "field_name", "quantity"))
        return value

    @model_validator(mode="after")
    def _check_gpu_fields(self) -> GpuPool:
        has_gpu = self.gpus_per_node > 0
        if has_gpu != bool(self.resource_key) or has_gpu != bool(self.accelerator):
            raise ValueError(
                f"pool {self.name!r}: accelerator, resource_key and gpus_per_node > 0 go together; "
                "a CPU pool sets none of them"
            )
        return self

    @property
    def has_gpus(self) -> bool:
        """Whether nodes of this pool carry accelerators."""
        return self.gpus_per_node > 0

    @property
    def node_cpu(self) -> Decimal:
        """Allocatable cores of one node."""
        return parse_quantity(self.cpu_per_node)

    @property
    def node_memory(self) -> Decimal:
        """Allocatable bytes of one node."""
        return parse_quantity(self.memory_per_node)

    def default_cpu(self, gpus: int) -> str:
        """Worker CPU when a spec gives none: configured, or the node's share for `gpus` GPUs."""
        if self.default_worker_cpu:
            return self.default_worker_cpu
        share = Decimal(gpus) / self.gpus_per_node if self.has_gpus and gpus else Decimal(1)
        return format_cpu(max(Decimal(1), (self.node_cpu * share).to_integral_value(rounding="ROUND_FLOOR")))

    def default_memory(self, gpus: int) -> str:
        """Worker memory when a spec gives none: configured, or the node's share for `gpus` GPUs."""
        if self.default_worker_memory:
            return self.default_worker_memory
        share = Decimal(gpus) / self.gpus_per_node if self.has_gpus and gpus else Decimal(1)
        gib = (self.node_memory * share / 2**30).to_integral_value(rounding="ROUND_FLOOR")
        return format_bytes(int(max(Decimal(1), gib)) * 2**30)


class PoolCatalog(BaseModel):
    """All pools a deployment offers, by name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pools: tuple[GpuPool, ...] = Field(description="The pools, in display order.")
    source: str = Field(default="<memory>", description="Where the catalog was loaded from, for error messages.")

    @model_validator(mode="after")
    def _unique(self) -> PoolCatalog:
        names = [p.name for p in self.pools]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"pool names must be unique; repeated: {', '.join(dupes)}")
        if not self.pools:
            raise ValueError("the catalog defines no pools; define at least one (e.g. `cpu`)")
        return self

    @property
    def names(self) -> list[str]:
        """Pool names in display order."""
        return [p.name for p in self.pools]

    def get(self, name: str) -> GpuPool:
        """The pool called `name` (case-insensitive).

        Raises:
            PoolError: listing the known pools.
        """
        for pool in self.pools:
            if pool.name == name.strip().lower():
                return pool
        raise PoolError(f"gpu_pool {name!r} is not defined; known pools: {', '.join(self.names)} (see `dml pools`)")

    def resolve(self, shorthand: str) -> tuple[GpuPool, int | None]:
        """Resolve a pool name or SkyPilot-style `h100:8` to (pool, GPUs per worker or None).

        Raises:
            PoolError: for an unknown pool, a bad count, or more GPUs than a node has.
        """
        name, sep, count = shorthand.strip().partition(":")
        pool = self.get(name)
        if not sep:
            return pool, None
        if not count.isdigit() or int(count) < 1:
            raise PoolError(
                f"gpu_pool {shorthand!r}: the GPU count after ':' must be a whole number >= 1, e.g. '{name}:8'"
            )
        gpus = int(count)
        if not pool.has_gpus:
            raise PoolError(
                f"gpu_pool {shorthand!r}: pool {pool.name!r} has no GPUs; use '{pool.name}' without a count"
            )
        if gpus > pool.gpus_per_node:
            raise PoolError(
                f"gpu_pool {shorthand!r}: one {pool.name} node has {pool.gpus_per_node} GPUs; "
                f"ask for at most '{pool.name}:{pool.gpus_per_node}' and add workers for more"
            )
        return pool, gpus


def parse_catalog(text: str, *, source: str) -> PoolCatalog:
    """Parse catalog YAML (`pools: [...]`).

    Raises:
        PoolError: naming the file and every invalid field.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PoolError(f"pool catalog {source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("pools"), list):
        raise PoolError(f"pool catalog {source}: expected a mapping with a 'pools' list")
    try:
        return PoolCatalog(pools=data["pools"], source=source)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors(include_url=False)
        )
        raise PoolError(f"pool catalog {source}: {problems}") from exc


def load_catalog(path: Path | None = None) -> PoolCatalog:
    """Load the catalog from `path`, the `DML_POOLS_FILE` setting, or the packaged default."""
    path = path or get_settings().pools_file
    if path is not None:
        if not path.is_file():
            raise PoolError(f"pool catalog {path} does not exist; fix DML_POOLS_FILE or unset it for the default")
        return parse_catalog(path.read_text(), source=str(path))
    packaged = resources.files("discord_ml").joinpath("data/pools.yaml")
    return parse_catalog(packaged.read_text(), source="discord_ml/data/pools.yaml")


@functools.cache
def get_catalog() -> PoolCatalog:
    """The catalog in force (cached; `get_catalog.cache_clear()` after changing settings)."""
    return load_catalog()
