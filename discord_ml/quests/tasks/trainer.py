"""The Ray Train worker loop: TorchRec model-parallel embeddings, a data shard per worker, a
checkpoint every epoch, resumption from the last one after a worker failure.

Runs inside `TorchTrainer` workers; the process group (gloo on CPU, NCCL on GPU) is set up by
Ray Train. Tables are placed by `quests/ml/sharding.py` and updated inside backward (FBGEMM row-wise
Adagrad); the dense layers run under DDP with fused Adam. Checkpoints are
`torch.distributed.checkpoint` directories: each rank writes its own shards, Ray Train gathers
them into one checkpoint. Progress goes to the driver through a Ray queue.
"""

from __future__ import annotations

import json
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
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save
from torchrec.optim import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter

from discord_ml.quests.lake import Lake
from discord_ml.quests.ml.features import matrices
from discord_ml.quests.ml.metrics import auc, log_loss
from discord_ml.quests.ml.models import LEARNING_RATE_DECAY, ModelConfig, batch_kjt, build_model
from discord_ml.quests.ml.sharding import describe_plan, local_memory, shard_model

STATE_FILE = "train_state.json"  # epoch and metrics, beside the DCP shards
DRILL_DELAY_S = 5.0
VALID_BATCH = 16384


class Shard:
    """One worker's rows as tensors, converted once: the step path only indexes them."""

    def __init__(self, refs: list[Any]) -> None:
        table = pa.concat_tables(ray.get(refs))
        sparse, dense = matrices(table)
        self.sparse, self.dense = torch.from_numpy(sparse), torch.from_numpy(dense)
        self.labels = torch.from_numpy(table["label"].to_numpy(zero_copy_only=False).astype(np.float32))
        self.nbytes = sum(t.numel() * t.element_size() for t in (self.sparse, self.dense, self.labels))

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, index: torch.Tensor | slice, device: torch.device) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """The rows `index` selects from this worker's shard, as (sparse, dense, labels) on `device`."""
        return (batch_kjt(self.sparse[index]).to(device), self.dense[index].to(device), self.labels[index].to(device))


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


def _state(model: torch.nn.Module, optimizer: CombinedOptimizer) -> dict[str, Any]:
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict()}


def _restore(model: torch.nn.Module, optimizer: CombinedOptimizer) -> int:
    """Load the last checkpoint, if any (after a worker failure); returns the epoch to start at."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0
    optimizer.init_state()  # Adam's state exists only after a step: make the slots DCP loads into
    state = _state(model, optimizer)
    with checkpoint.as_directory() as directory:
        dcp_load(state, checkpoint_id=directory)  # collective: each rank reads its own shards
        with open(os.path.join(directory, STATE_FILE)) as f:
            epoch = json.load(f)["epoch"]
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return epoch + 1


def _validate(model: torch.nn.Module, shard: Shard, device: torch.device) -> tuple[float, float]:
    """(AUC, log loss) over every rank's validation shard."""
    steps = _all_min(-(-len(shard) // VALID_BATCH))  # equal shards: every rank runs the same lookups
    model.eval()
    scores = []
    with torch.no_grad():
        for step in range(steps):
            sparse, dense, _ = shard.batch(slice(step * VALID_BATCH, (step + 1) * VALID_BATCH), device)
            scores.append(torch.sigmoid(model(sparse, dense)).cpu().numpy())
    local = np.concatenate(scores)
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, (local, shard.labels[: len(local)].numpy()))
    p, y = np.concatenate([g[0] for g in gathered]), np.concatenate([g[1] for g in gathered])
    return auc(y, p), log_loss(y, p)


def _save(model: torch.nn.Module, optimizer: CombinedOptimizer, epoch: int, metrics: dict[str, Any]) -> None:
    """Every rank writes its shards (rank 0 also the metadata and the epoch) and reports the directory."""
    with tempfile.TemporaryDirectory() as directory:
        dcp_save(_state(model, optimizer), checkpoint_id=directory)
        if dist.get_rank() == 0:
            with open(os.path.join(directory, STATE_FILE), "w") as f:
                json.dump({"epoch": epoch, "metrics": metrics}, f)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))


def _set_learning_rates(model: Any, dense: Any, config: dict[str, Any], epoch: int) -> None:
    """Halve both step sizes each epoch: settles instead of overfitting."""
    decay = LEARNING_RATE_DECAY**epoch
    for group in dense.param_groups:
        group["lr"] = decay * config["learning_rate"]
    for group in model.fused_optimizer.param_groups:
        group["lr"] = decay * config["sparse_learning_rate"]


def train_loop(config: dict[str, Any]) -> None:
    """The Ray Train worker loop: shard the tables with TorchRec, train, checkpoint each epoch, report."""
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    torch.set_num_threads(config["threads"])
    progress = config["progress"]
    torch.manual_seed(config["seed"])

    model_config = ModelConfig.from_dict(config["model"])
    model, plan = shard_model(build_model(model_config, torch.device("meta")), model_config.tables(), device=device,
                              sparse_learning_rate=config["sparse_learning_rate"])  # fmt: skip
    dense = KeyedOptimizerWrapper(
        dict(in_backward_optimizer_filter(model.named_parameters())),
        lambda params: torch.optim.Adam(params, lr=config["learning_rate"], fused=True),
    )
    optimizer = CombinedOptimizer([model.fused_optimizer, dense])
    if rank == 0:
        progress.put(
            {"kind": "plan", "world": world, "backend": dist.get_backend(), "tables": describe_plan(plan, world)}
        )
    start_epoch = _restore(model, optimizer)
    if start_epoch and rank == 0:
        progress.put({"kind": "resumed", "epoch": start_epoch, "world": world})

    train, valid = Shard(config["train_shards"][rank]), Shard(config["valid_shards"][rank])
    batch = config["batch_size"]
    steps = _all_min(len(train) // batch)  # every rank takes the same steps: the all-to-alls pair up
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for epoch in range(start_epoch, config["epochs"]):
        _fault_drill(config, epoch, rank)
        _set_learning_rates(model, dense, config, epoch)
        started = time.perf_counter()
        model.train()
        order = torch.from_numpy(np.random.default_rng([config["seed"], epoch, rank]).permutation(len(train)))
        total = torch.zeros((), dtype=torch.float64, device=device)  # summed on the device: no sync per step
        for step in range(steps):
            sparse, dense_x, y = train.batch(order[step * batch : (step + 1) * batch], device)
            loss = loss_fn(model(sparse, dense_x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # the sharded tables are updated here, inside backward
            optimizer.step()
            total += loss.detach()
        train_seconds = time.perf_counter() - started
        valid_auc, valid_log_loss = _validate(model, valid, device)
        metrics = {
            "epoch": epoch,
            "train_loss": _all_mean(float(total) / max(steps, 1)),
            "valid_auc": valid_auc,
            "valid_log_loss": valid_log_loss,
            "samples_per_s": steps * batch * world / max(train_seconds, 1e-9),
            "epoch_seconds": time.perf_counter() - started,
        }
        if epoch == start_epoch:
            memory = local_memory(model, optimizer.state_dict()) | {"data_shard_bytes": train.nbytes + valid.nbytes}
            progress.put({"kind": "memory", "rank": rank, "world": world, **memory})
        _save(model, optimizer, epoch, metrics)
        if rank == 0:
            progress.put({"kind": "epoch", **metrics})
