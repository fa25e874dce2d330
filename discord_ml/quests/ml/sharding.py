"""Where each embedding table lives: TorchRec's planner under the platform's placement rules, and
`DistributedModelParallel` around the model.

Rules (constraints handed to `EmbeddingShardingPlanner`, which then balances the ranks):
- a table under `SMALL_TABLE_ROWS` rows is replicated (data-parallel): a few rows cost less to
  all-reduce than to route every lookup through an all-to-all;
- on GPUs every other table is row-wise (TorchRec's row-wise kernels need CUDA + NCCL);
- on CPUs a table goes whole to one rank (table-wise; the planner balances the ranks), unless it is
  bigger than `WHOLE_TABLE_LIMIT_BYTES`: then it is split column-wise across every rank (each
  holds all rows and 1/N of the columns: 1/N of the memory). Table-wise is the faster of the two
  on CPU: a lookup is processed once, by one rank, where column-wise makes every rank process every
  lookup of the table (measured by `bench/train_step.py`).
Sharded tables are updated inside backward by FBGEMM (row-wise Adagrad); replicated tables and the
dense layers train under DDP with the dense optimizer.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
from torchrec.distributed.planner.types import ParameterConstraints
from torchrec.distributed.types import ShardingEnv, ShardingPlan, ShardingType
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.optim import RowWiseAdagrad
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward

SMALL_TABLE_ROWS = 1024
WHOLE_TABLE_LIMIT_BYTES = 256 * 2**20


def placement_rules(
    tables: list[EmbeddingBagConfig], *, world: int, device_type: str, whole_table_limit: int = WHOLE_TABLE_LIMIT_BYTES
) -> dict[str, str]:
    """Table name -> the sharding type the rules above give it (pure; tested without a process group)."""
    rules: dict[str, str] = {}
    for table in tables:
        if table.num_embeddings < SMALL_TABLE_ROWS:
            kind = ShardingType.DATA_PARALLEL
        elif device_type == "cuda":
            kind = ShardingType.ROW_WISE
        elif world > 1 and table.num_embeddings * table.embedding_dim * 4 > whole_table_limit and _splits(table, world):
            kind = ShardingType.COLUMN_WISE
        else:
            kind = ShardingType.TABLE_WISE
        rules[table.name] = kind.value
    return rules


def _splits(table: EmbeddingBagConfig, world: int) -> bool:
    return table.embedding_dim % world == 0 and table.embedding_dim // world >= 4


def constraints(
    tables: list[EmbeddingBagConfig], *, world: int, device_type: str, whole_table_limit: int
) -> dict[str, ParameterConstraints]:
    """TorchRec's planner constraints: which sharding types each table may take."""
    rules = placement_rules(tables, world=world, device_type=device_type, whole_table_limit=whole_table_limit)
    by_name = {t.name: t for t in tables}
    return {
        name: ParameterConstraints(
            sharding_types=[kind],
            # A column-wise table is cut into exactly one shard per rank.
            min_partition=by_name[name].embedding_dim // world if kind == ShardingType.COLUMN_WISE.value else None,
        )
        for name, kind in rules.items()
    }


def shard_model(
    model: nn.Module,
    tables: list[EmbeddingBagConfig],
    *,
    device: torch.device,
    sparse_learning_rate: float,
    whole_table_limit: int = WHOLE_TABLE_LIMIT_BYTES,
) -> tuple[DistributedModelParallel, ShardingPlan]:
    """Plan the tables of `model.embeddings` (built on `meta`) over the default process group and wrap
    the model in `DistributedModelParallel`; every rank must call it."""
    apply_optimizer_in_backward(RowWiseAdagrad, model.get_submodule("embeddings").parameters(),
                                {"lr": sparse_learning_rate})  # fmt: skip
    world = dist.get_world_size()
    planner = EmbeddingShardingPlanner(
        topology=Topology(world_size=world, compute_device=device.type),
        constraints=constraints(tables, world=world, device_type=device.type, whole_table_limit=whole_table_limit),
    )
    sharders: list[Any] = [EmbeddingBagCollectionSharder()]
    plan = planner.collective_plan(model, sharders, dist.GroupMember.WORLD)
    env = ShardingEnv.from_process_group(dist.GroupMember.WORLD)  # pyright: ignore[reportArgumentType]
    return DistributedModelParallel(model, env=env, device=device, plan=plan, sharders=sharders), plan


def describe_plan(plan: ShardingPlan, world: int) -> list[dict[str, Any]]:
    """The plan as plain data: per table its sharding type, kernel and shards (rank, offsets, sizes)."""
    tables = []
    for module_plan in plan.plan.values():
        for table, sharding in module_plan.items():  # pyright: ignore[reportAttributeAccessIssue]
            spec = sharding.sharding_spec
            if spec is None:  # replicated: the whole table on every rank
                shards = [{"rank": rank, "offsets": None, "sizes": None} for rank in range(world)]
            else:
                shards = [
                    {"rank": s.placement.rank(), "offsets": list(s.shard_offsets), "sizes": list(s.shard_sizes)}
                    for s in spec.shards  # pyright: ignore[reportAttributeAccessIssue]
                ]
            tables.append({"table": table, "sharding_type": sharding.sharding_type,
                           "compute_kernel": sharding.compute_kernel, "shards": shards})  # fmt: skip
    return sorted(tables, key=lambda t: t["table"])


def local_memory(model: nn.Module, optimizer_state: dict[str, Any]) -> dict[str, int]:
    """Bytes this rank holds: sharded table shards, their optimizer state, and replicated tables."""

    def local_bytes(value: Any) -> int:
        if hasattr(value, "local_shards"):
            return sum(s.tensor.numel() * s.tensor.element_size() for s in value.local_shards())
        return value.numel() * value.element_size() if isinstance(value, torch.Tensor) else 0

    tables = {n: v for n, v in model.state_dict().items() if n.startswith("embeddings.")}
    sharded = {n for n, v in tables.items() if hasattr(v, "local_shards")}
    return {
        "sharded_table_bytes": sum(local_bytes(tables[n]) for n in sharded),
        "sharded_optimizer_bytes": sum(
            local_bytes(v)
            for n, state in optimizer_state.get("state", {}).items()
            if n in sharded
            for v in state.values()
        ),
        "replicated_table_bytes": sum(local_bytes(v) for n, v in tables.items() if n not in sharded),
    }
