"""Memory-only check of the scaling argument: what each worker holds of a large user table.

    python -m bench.sharding_memory [--rows 4194304] [--dim 64] [--json]

For 1 and 2 workers (real gloo processes, the trainer's `shard_model`), it builds DLRM with a
`rows x dim` user table and reports per rank: the bytes of sharded table shards, of their
optimizer state (row-wise Adagrad), of the replicated tables, and the process's peak RSS. The
reference is the same model on one worker, measured in the same run: with N workers each should
hold 1/N of the sharded tables.
"""

from __future__ import annotations

import argparse
import json
import resource

import torch

from bench.gloo import on_ranks
from discord_ml.quests.ml.features import FeatureSpec
from discord_ml.quests.ml.models import ModelConfig, build_model


def _rank(rank: int, world: int, rows: int, dim: int) -> dict[str, int]:
    from discord_ml.quests.ml.sharding import local_memory, shard_model

    config = ModelConfig("dlrm", embedding_dim=dim, features=FeatureSpec(user_buckets=rows))
    model, _ = shard_model(build_model(config, torch.device("meta")), config.tables(), device=torch.device("cpu"),
                           sparse_learning_rate=0.1)  # fmt: skip
    memory = local_memory(model, model.fused_optimizer.state_dict())
    return memory | {"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1 << 22, help="rows of the user table")
    parser.add_argument("--dim", type=int, default=64, help="embedding width of every table")
    parser.add_argument("--json", action="store_true", help="end with one JSON object")
    args = parser.parse_args()
    results = {world: on_ranks(_rank, world, args.rows, args.dim) for world in (1, 2)}
    reference = results[1][0]["sharded_table_bytes"] + results[1][0]["sharded_optimizer_bytes"]
    mib = 2**20
    print(f"user table {args.rows:,} x {args.dim} (fp32: {args.rows * args.dim * 4 / mib:,.0f} MiB)")
    print("| workers | rank | sharded tables (MiB) | their optimizer state (MiB) | share of 1 worker's | "
          "replicated (KiB) | peak RSS (MiB) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for world, ranks in results.items():
        for rank, m in enumerate(ranks):
            held = m["sharded_table_bytes"] + m["sharded_optimizer_bytes"]
            tables, state = m["sharded_table_bytes"] / mib, m["sharded_optimizer_bytes"] / mib
            replicated, rss = m["replicated_table_bytes"] / 1024, m["peak_rss_bytes"] / mib
            print(f"| {world} | {rank} | {tables:,.1f} | {state:,.1f} | {held / reference:.3f} | {replicated:,.1f} | "
                  f"{rss:,.0f} |")  # fmt: skip
    if args.json:
        shares = [(m["sharded_table_bytes"] + m["sharded_optimizer_bytes"]) / reference for m in results[2]]
        print(json.dumps({"rows": args.rows, "dim": args.dim, "per_rank_share_2_workers": shares,
                          "results": {str(k): v for k, v in results.items()}}))  # fmt: skip


if __name__ == "__main__":
    main()
