"""Start-up time of the `dml` fast paths against a bare Python interpreter, measured in the same run.

python -m bench.cli [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

DML = str(Path(sys.executable).parent / "dml")
CASES = {
    "python -c pass (reference)": [sys.executable, "-c", "pass"],
    "dml --help": [DML, "--help"],
    "dml pools": [DML, "pools"],
    "dml cluster create --dry-run": [
        DML,
        "cluster",
        "create",
        "bench",
        "--gpus",
        "h100:8",
        "--workers",
        "4",
        "--dry-run",
    ],
}


def wall(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    results = {name: statistics.median(wall(argv) for _ in range(args.repeats)) for name, argv in CASES.items()}
    reference = results["python -c pass (reference)"]
    print(f"median of {args.repeats} runs")
    print(f"{'command':<34}{'wall (s)':>10}{'vs python':>11}")
    for name, seconds in results.items():
        print(f"{name:<34}{seconds:>10.3f}{seconds / reference:>10.1f}x")


if __name__ == "__main__":
    main()
