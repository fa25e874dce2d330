"""Where one training step's time goes, for the sharded trainer on 1 and 2 workers.

    python -m bench.train_step [--batch-size 2048] [--steps 60] [--json]

Real gloo processes (one thread each, like the Ray Train workers here) run the trainer's
`shard_model` DLRM on synthetic batches of the pipeline's shapes. Per configuration it reports the
step time split into forward (which includes TorchRec's input and output all-to-alls), backward
(the embedding all-to-all, FBGEMM's fused update and DDP's all-reduce), and the dense optimizer,
plus the share of the step spent in collectives according to `torch.profiler`. The reference is the
same code on 1 worker in the same run: a step of 2 workers does the same work per worker as 1
worker, so what it adds is communication and waiting.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.distributed as dist

from bench.gloo import on_ranks
from discord_ml.quests.ml.models import ModelConfig, batch_kjt, build_model

COLLECTIVES = ("all_to_all", "allreduce", "all_reduce", "alltoall", "broadcast", "gloo")


def _rank(rank: int, world: int, batch: int, steps: int) -> dict[str, float]:
    from torch.profiler import ProfilerActivity, profile
    from torchrec.optim import CombinedOptimizer, KeyedOptimizerWrapper
    from torchrec.optim.optimizers import in_backward_optimizer_filter

    from discord_ml.quests.ml.sharding import shard_model

    torch.manual_seed(0)
    config = ModelConfig("dlrm")
    model, _ = shard_model(build_model(config, torch.device("meta")), config.tables(), device=torch.device("cpu"),
                           sparse_learning_rate=0.5)  # fmt: skip
    dense = KeyedOptimizerWrapper(dict(in_backward_optimizer_filter(model.named_parameters())),
                                  lambda p: torch.optim.Adam(p, lr=0.01, fused=True))  # fmt: skip
    optimizer = CombinedOptimizer([model.fused_optimizer, dense])
    rng = torch.Generator().manual_seed(rank)
    sizes = config.features.cardinalities()
    batches = [
        (batch_kjt(torch.stack([torch.randint(0, n, (batch,), generator=rng) for n in sizes], 1)),
         torch.rand(batch, 5, generator=rng), torch.randint(0, 2, (batch,), generator=rng).float())
        for _ in range(8)
    ]  # fmt: skip
    loss_fn = torch.nn.BCEWithLogitsLoss()
    phases: dict[str, list[float]] = {"forward": [], "backward": [], "optimizer": [], "step": []}

    def step(i: int, record: bool) -> None:
        sparse, dense_x, y = batches[i % len(batches)]
        t0 = time.perf_counter()
        loss = loss_fn(model(sparse, dense_x), y)
        t1 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        optimizer.step()
        t3 = time.perf_counter()
        if record:
            for name, seconds in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t3 - t0), strict=True):
                phases[name].append(seconds)

    for i in range(10):  # warm-up
        step(i, record=False)
    dist.barrier()
    for i in range(steps):
        step(i, record=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(10):
            step(i, record=False)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    comm = sum(e.self_cpu_time_total for e in events if any(c in e.key.lower() for c in COLLECTIVES))
    result = {name: float(np.median(values)) * 1e3 for name, values in phases.items()}
    result |= {
        "collective_share": comm / max(total, 1),
        "samples_per_s": batch * world / float(np.median(phases["step"])),
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, nargs="+", default=[2048, 8192], help="rows per worker per step")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--json", action="store_true", help="end with one JSON object")
    args = parser.parse_args()
    rows, report = [], {}
    for batch in args.batch_size:
        reference = on_ranks(_rank, 1, batch, args.steps)[0]
        for world in (1, 2):
            ranks = [reference] if world == 1 else on_ranks(_rank, world, batch, args.steps)
            slowest = max(ranks, key=lambda r: r["step"])
            rows.append((batch, world, slowest, slowest["samples_per_s"] / reference["samples_per_s"]))
            report[f"{world}x{batch}"] = slowest | {"vs_1_worker": rows[-1][3]}
    print("| batch/worker | workers | step (ms) | forward | backward | optimizer | in collectives | samples/s "
          "| vs 1 worker |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for batch, world, r, ratio in rows:
        times = f"{r['step']:.1f} | {r['forward']:.1f} | {r['backward']:.1f} | {r['optimizer']:.1f}"
        print(f"| {batch} | {world} | {times} | {r['collective_share']:.0%} | {r['samples_per_s']:,.0f} | "
              f"{ratio:.2f}x |")  # fmt: skip
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
