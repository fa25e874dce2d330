"""Run a measurement on N real gloo processes (one torch thread each, like the Ray Train workers
here) and collect what each rank returns."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.multiprocessing.spawn import spawn

from discord_ml.cluster.local.processes import free_ports

RankFn = Callable[..., dict[str, Any]]


def _entry(rank: int, target: RankFn, world: int, port: int, out: str, args: tuple[Any, ...]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    result = target(rank, world, *args)
    Path(out, f"rank-{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


def on_ranks(target: RankFn, world: int, *args: Any) -> list[dict[str, Any]]:
    """`target(rank, world, *args)` on `world` processes in one gloo group; its results by rank.
    `target` must be a module-level function (it is pickled into the spawned processes)."""
    with tempfile.TemporaryDirectory() as out:
        [port] = free_ports(1)
        spawn(_entry, args=(target, world, port, out, args), nprocs=world)
        return [json.loads(Path(out, f"rank-{r}.json").read_text()) for r in range(world)]
