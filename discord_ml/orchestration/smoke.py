"""A Ray job that proves the cluster works: fans tasks out over every worker node and estimates
pi by Monte Carlo. Prints progress lines; reports its measurements through Dagster Pipes.

`ray` is imported inside functions: the platform check's asset imports `SmokeArgs` from here.
"""

from __future__ import annotations

import random
import socket
import time
from typing import ClassVar

from discord_ml.jobs.entrypoint import Entrypoint, arg


class SmokeArgs(Entrypoint):
    """How much work the smoke job fans out."""

    MODULE: ClassVar[str] = "discord_ml.orchestration.smoke"
    tasks: int = arg(default=8, help="number of Ray tasks")
    draws: int = arg(default=200_000, help="samples per task")


def sample(seed: int, draws: int) -> tuple[int, str]:
    """Count the draws that land inside the unit circle, and say which node did it."""
    import ray

    rng = random.Random(seed)
    inside = sum(1 for _ in range(draws) if rng.random() ** 2 + rng.random() ** 2 <= 1.0)
    return inside, ray.get_runtime_context().get_node_id()


def main() -> None:
    """The Ray job: estimate pi with Ray tasks and report it through Dagster Pipes."""
    from dagster_pipes import open_dagster_pipes

    args = SmokeArgs.parse()
    with open_dagster_pipes() as pipes:
        result = run(args.tasks, args.draws)
        pipes.log.info(f"pi ~ {result['pi_estimate']:.4f} from {result['tasks']} tasks")
        pipes.report_asset_materialization(metadata=result)


def run(tasks: int, draws: int) -> dict[str, float | int | str]:
    """Fan `tasks` sampling tasks out over the cluster and summarize what happened."""
    import ray

    started = time.monotonic()
    ray.init()
    nodes = [n for n in ray.nodes() if n["Alive"]]
    print(f"connected to Ray {ray.__version__} on {socket.gethostname()}: {len(nodes)} alive nodes", flush=True)
    remote = ray.remote(num_cpus=1)(sample)
    refs = [remote.remote(seed, draws) for seed in range(tasks)]
    inside, node_ids = 0, set()
    for i, (hits, node_id) in enumerate(ray.get(refs)):
        inside += hits
        node_ids.add(node_id)
        print(f"task {i + 1}/{tasks} done on node {node_id[:8]}", flush=True)
    estimate = 4.0 * inside / (tasks * draws)
    return {
        "ray_version": ray.__version__,
        "alive_nodes": len(nodes),
        "cluster_cpus": ray.cluster_resources().get("CPU", 0.0),
        "tasks": tasks,
        "worker_nodes_used": len(node_ids),
        "pi_estimate": estimate,
        "seconds": round(time.monotonic() - started, 3),
    }


if __name__ == "__main__":
    main()
