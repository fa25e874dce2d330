"""The Ray Train worker loop: FSDP2-sharded embeddings, a data shard per worker, a checkpoint
every epoch, resumption from the last one after a worker failure.

Runs inside `TorchTrainer` workers; the process group (gloo on CPU, NCCL on GPU) is set up by
Ray Train. Progress goes to the driver through a Ray queue so it can be forwarded to Dagster.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from discord_ml.lake import Lake
from discord_ml.ml.features import matrices
from discord_ml.ml.metrics import auc, log_loss
from discord_ml.ml.models import LEARNING_RATE_DECAY, ModelConfig, build_model, shard_embeddings

STATE_FILE = "state.pt"
DRILL_DELAY_S = 5.0
FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


Shard = tuple[np.ndarray, np.ndarray, np.ndarray]  # sparse, dense, labels


def _load_shard(refs: list[Any]) -> Shard:
    table = pa.concat_tables(ray.get(refs))
    sparse, dense = matrices(table)
    return sparse, dense, table["label"].to_numpy(zero_copy_only=False).astype(np.float32)


def _all_min(value: int) -> int:
    t = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def _all_mean(value: float) -> float:
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / dist.get_world_size()


def _fault_drill(config: dict[str, Any], epoch: int, rank: int) -> None:
    """Kill this worker once, at the start of the configured epoch (a failure drill, off by default)."""
    drill = config.get("fail_once")
    if not drill or drill["epoch"] != epoch or rank != dist.get_world_size() - 1:
        return
    lake = Lake(drill["root"])  # the marker sits in the run's storage, wherever that is
    marker = lake.path(*drill["marker"])
    if lake.exists(marker):
        return
    lake.write_bytes_atomic(marker, f"killed rank {rank} at epoch {epoch}\n".encode())
    # A worker dies some time after the last checkpoint, not in the same instant: Ray Train's
    # controller collects reports on its health-check poll (2 s), and only then is it resumable.
    time.sleep(DRILL_DELAY_S)
    print(f"fault drill: killing worker rank {rank} (pid {os.getpid()}) during epoch {epoch}", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def _restore(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Load the last checkpoint, if any (after a worker failure); returns the epoch to start at."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as directory:
        state = torch.load(os.path.join(directory, STATE_FILE), weights_only=False)
    set_model_state_dict(model, state["model"], options=FULL)
    set_optimizer_state_dict(model, optimizer, state["optimizer"], options=FULL)
    return state["epoch"] + 1


def _validate(model: torch.nn.Module, shard: Shard, batch: int, device: Any) -> tuple[float, float]:
    """(AUC, log loss) over every rank's validation shard."""
    sparse, dense, labels = shard
    steps = _all_min(-(-len(labels) // batch))
    model.eval()
    scores = []
    with torch.no_grad():
        for step in range(steps):
            part = slice(step * batch, (step + 1) * batch)  # a short rank runs on an empty batch
            s, d = torch.from_numpy(sparse[part]).to(device), torch.from_numpy(dense[part]).to(device)
            scores.append(torch.sigmoid(model(s, d)).cpu().numpy())
    local = np.concatenate(scores)
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, (local, labels[: len(local)]))
    p, y = np.concatenate([g[0] for g in gathered]), np.concatenate([g[1] for g in gathered])
    return auc(y, p), log_loss(y, p)


def _save(model: torch.nn.Module, optimizer: torch.optim.Optimizer, epoch: int, metrics: dict[str, Any]) -> None:
    """Checkpoint the full (unsharded) state from rank 0 and report the epoch from every rank."""
    model_state = get_model_state_dict(model, options=FULL)  # collective: every rank calls it
    optimizer_state = get_optimizer_state_dict(model, optimizer, options=FULL)
    if dist.get_rank() != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as directory:
        state = {"model": model_state, "optimizer": optimizer_state, "epoch": epoch, "metrics": metrics}
        torch.save(state, os.path.join(directory, STATE_FILE))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))


def train_loop(config: dict[str, Any]) -> None:
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    progress = config["progress"]
    torch.manual_seed(config["seed"])

    model = build_model(ModelConfig.from_dict(config["model"])).to(device)
    shard_embeddings(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=config["learning_rate"])
    user_table: Any = model.get_submodule("embeddings.tables.0").weight  # a DTensor once sharded
    progress.put(
        {
            "kind": "shard",
            "rank": rank,
            "world": world,
            "backend": dist.get_backend(),
            "local_rows": int(user_table.to_local().shape[0]),
            "rows": int(user_table.shape[0]),
            "placement": str(user_table.placements),
        }
    )
    start_epoch = _restore(model, optimizer)
    if start_epoch and rank == 0:
        progress.put({"kind": "resumed", "epoch": start_epoch, "world": world})

    sparse, dense, labels = _load_shard(config["train_shards"][rank])
    valid = _load_shard(config["valid_shards"][rank])
    batch = config["batch_size"]
    steps = _all_min(len(labels) // batch)  # every rank takes the same steps: FSDP's collectives pair up
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for epoch in range(start_epoch, config["epochs"]):
        _fault_drill(config, epoch, rank)
        for group in optimizer.param_groups:  # halve the step each epoch: settles instead of overfitting
            group["lr"] = LEARNING_RATE_DECAY**epoch * config["learning_rate"]
        started = time.perf_counter()
        model.train()
        order = np.random.default_rng([config["seed"], epoch, rank]).permutation(len(labels))
        total = 0.0
        for step in range(steps):
            index = order[step * batch : (step + 1) * batch]
            s, d, y = (torch.from_numpy(a[index]).to(device) for a in (sparse, dense, labels))
            loss = loss_fn(model(s, d), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
        train_seconds = time.perf_counter() - started
        valid_auc, valid_log_loss = _validate(model, valid, batch, device)
        metrics = {
            "epoch": epoch,
            "train_loss": _all_mean(total / max(steps, 1)),
            "valid_auc": valid_auc,
            "valid_log_loss": valid_log_loss,
            "samples_per_s": steps * batch * world / max(train_seconds, 1e-9),
            "epoch_seconds": time.perf_counter() - started,
        }
        _save(model, optimizer, epoch, metrics)
        if rank == 0:
            progress.put({"kind": "epoch", **metrics})
