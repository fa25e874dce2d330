"""Table placement: the platform's rules, and TorchRec's sharded model on two real gloo processes —
1/N of a big table per worker, and a checkpoint that reassembles into the plain model exactly."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch.multiprocessing.spawn import spawn

from discord_ml.cluster.local.processes import free_ports
from discord_ml.quests.ml.features import CATEGORICAL, SPARSE, FeatureSpec
from discord_ml.quests.ml.models import ModelConfig, batch_kjt, build_model
from discord_ml.quests.ml.sharding import placement_rules

BIG = ModelConfig("dlrm", embedding_dim=64, features=FeatureSpec(user_buckets=1 << 18))


def test_cpu_rules_place_whole_tables_and_replicate_the_vocabularies() -> None:
    rules = placement_rules(ModelConfig("dlrm").tables(), world=2, device_type="cpu")
    assert rules == {"user_bucket": "table_wise", "quest_bucket": "table_wise"} | dict.fromkeys(
        CATEGORICAL, "data_parallel"
    )


def test_a_table_over_the_limit_is_split_by_columns() -> None:
    tables = BIG.tables()  # a 64 MiB user table
    assert placement_rules(tables, world=2, device_type="cpu")["user_bucket"] == "table_wise"
    rules = placement_rules(tables, world=2, device_type="cpu", whole_table_limit=32 * 2**20)
    assert (rules["user_bucket"], rules["quest_bucket"]) == ("column_wise", "table_wise")


def test_one_worker_holds_whole_tables_and_gpus_shard_by_rows() -> None:
    tables = ModelConfig("dcn_v2").tables()
    assert placement_rules(tables, world=1, device_type="cpu")["user_bucket"] == "table_wise"
    gpu = placement_rules(tables, world=4, device_type="cuda")
    assert (gpu["user_bucket"], gpu["quest_bucket"], gpu["country_idx"]) == ("row_wise", "row_wise", "data_parallel")


def test_a_width_that_does_not_split_evenly_stays_table_wise() -> None:
    tables = ModelConfig("dlrm", embedding_dim=6).tables()
    assert placement_rules(tables, world=4, device_type="cpu")["user_bucket"] == "table_wise"


def _rank(rank: int, world: int, port: int, directory: str) -> None:
    """One gloo rank: shard BIG, train three steps, score a fixed batch, checkpoint like the trainer."""
    from torch.distributed.checkpoint.state_dict_saver import save
    from torchrec.optim.optimizers import in_backward_optimizer_filter

    from discord_ml.quests.ml.sharding import describe_plan, local_memory, shard_model
    from discord_ml.quests.tasks.trainer import STATE_FILE

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, plan = shard_model(build_model(BIG, torch.device("meta")), BIG.tables(), device=torch.device("cpu"),
                              sparse_learning_rate=0.1, whole_table_limit=32 * 2**20)  # fmt: skip
    dense_opt = torch.optim.Adam([p for _, p in in_backward_optimizer_filter(model.named_parameters())])
    rng = torch.Generator().manual_seed(rank)
    sizes = BIG.features.cardinalities()

    def batch(rows: int) -> tuple[Any, torch.Tensor]:
        sparse = torch.stack([torch.randint(0, n, (rows,), generator=rng) for n in sizes], dim=1)
        return batch_kjt(sparse), torch.rand(rows, 5, generator=rng)

    for _ in range(3):
        sparse, dense = batch(256)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(sparse, dense), torch.ones(256))
        dense_opt.zero_grad()
        loss.backward()
        dense_opt.step()
    model.eval()
    rng.manual_seed(99)  # the same scoring batch on every rank
    sparse, dense = batch(64)
    with torch.no_grad():
        scores = model(sparse, dense)
    save({"model": model.state_dict()}, checkpoint_id=directory)
    report = {"memory": local_memory(model, model.fused_optimizer.state_dict()), "scores": scores.tolist()}
    if rank == 0:
        report["plan"] = describe_plan(plan, world)
        (Path(directory) / STATE_FILE).write_text(json.dumps({"epoch": 0, "metrics": {}}))
    (Path(directory) / f"report-{rank}.json").write_text(json.dumps(report))
    dist.destroy_process_group()


@pytest.mark.e2e
def test_two_workers_each_hold_half_of_a_big_table_and_the_checkpoint_is_the_plain_model(tmp_path: Path) -> None:
    from discord_ml.quests.tasks.train import unshard_checkpoint

    [port] = free_ports(1)
    spawn(_rank, args=(2, port, str(tmp_path)), nprocs=2)
    reports = [json.loads((tmp_path / f"report-{r}.json").read_text()) for r in range(2)]

    plan = {t["table"]: t for t in reports[0]["plan"]}
    assert plan["user_bucket"]["sharding_type"] == "column_wise"
    user_bytes = (1 << 18) * 64 * 4  # 64 MiB
    quest_bytes = FeatureSpec().quest_buckets * 64 * 4
    held = sorted(r["memory"]["sharded_table_bytes"] for r in reports)
    assert held == [user_bytes // 2, user_bytes // 2 + quest_bytes]  # 1/N of the big table each
    # Row-wise Adagrad keeps one value per row of each shard: a 64th of the table, also split.
    assert sorted(r["memory"]["sharded_optimizer_bytes"] for r in reports) == [
        (1 << 18) * 4, (1 << 18) * 4 + FeatureSpec().quest_buckets * 4]  # fmt: skip

    _, artifact = unshard_checkpoint(str(tmp_path), BIG)
    plain = build_model(BIG)
    plain.load_state_dict(torch.load(io.BytesIO(artifact)))
    plain.eval()
    rng = torch.Generator().manual_seed(99)
    sparse = torch.stack([torch.randint(0, n, (64,), generator=rng) for n in BIG.features.cardinalities()], dim=1)
    with torch.no_grad():
        expected = plain(batch_kjt(sparse), torch.rand(64, 5, generator=rng)).numpy()
    for report in reports:
        np.testing.assert_allclose(report["scores"], expected, rtol=1e-5, atol=1e-6)
    assert len(SPARSE) == len(plan)
