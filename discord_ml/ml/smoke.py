"""A Ray job that proves the cluster works: fans tasks out over every worker node and
estimates pi by Monte Carlo. Prints progress lines and one `DML_RESULT {json}` line."""

from __future__ import annotations

import argparse
import json
import random
import socket
import time

import ray

from discord_ml.ml.smoke_protocol import RESULT_PREFIX


@ray.remote(num_cpus=1)
def sample(seed: int, draws: int) -> tuple[int, str]:
    """Count the draws that land inside the unit circle, and say which node did it."""
    rng = random.Random(seed)
    inside = sum(1 for _ in range(draws) if rng.random() ** 2 + rng.random() ** 2 <= 1.0)
    return inside, ray.get_runtime_context().get_node_id()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=8, help="number of Ray tasks")
    parser.add_argument("--draws", type=int, default=200_000, help="samples per task")
    args = parser.parse_args()

    started = time.monotonic()
    ray.init()
    nodes = [n for n in ray.nodes() if n["Alive"]]
    print(f"connected to Ray {ray.__version__} on {socket.gethostname()}: {len(nodes)} alive nodes", flush=True)
    refs = [sample.remote(seed, args.draws) for seed in range(args.tasks)]
    inside, node_ids = 0, set()
    for i, (hits, node_id) in enumerate(ray.get(refs)):
        inside += hits
        node_ids.add(node_id)
        print(f"task {i + 1}/{args.tasks} done on node {node_id[:8]}", flush=True)
    estimate = 4.0 * inside / (args.tasks * args.draws)
    result = {
        "ray_version": ray.__version__,
        "alive_nodes": len(nodes),
        "cluster_cpus": ray.cluster_resources().get("CPU", 0.0),
        "tasks": args.tasks,
        "worker_nodes_used": len(node_ids),
        "pi_estimate": estimate,
        "seconds": round(time.monotonic() - started, 3),
    }
    print(RESULT_PREFIX + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
