"""Chaos drill: real Dagster runs of the project's jobs, one injected fault each, then a count of what
was left behind.

    python -m bench.chaos --runs 8 [--json] [--kinds job_exit,head_killed] [--keep]

Everything is real: a Dagster instance (its own DAGSTER_HOME), local Ray clusters, the Kubernetes API
emulator (with its operator starting real Ray) for the kuberay fault, a small synthetic lake. Each
run is a `bench.chaos_worker` process, the drill's stand-in for a run launcher's run worker. Fault
kinds, cycled in this order:

- job_exit        the Ray job's driver is killed: the job exits non-zero and fails the step;
- worker_kill     a Ray Train worker is SIGKILLed after the first epoch: the run resumes from the checkpoint;
- run_terminated  the run is marked canceling and its worker interrupted (Dagster's terminate);
- run_killed      the run worker is SIGKILLed, so no teardown runs: the sweeper's tick must clean up;
- head_killed     the Ray head's processes are SIGKILLed while the job runs;
- never_ready     a KubeRay cluster stays Pending (emulator) past a short ready_timeout_s;
- corrupt_files   a landed day gets a corrupt Parquet file (the upstream's fault) before prep runs.

After each run and a sweeper tick (local and kuberay) it counts clusters still registered, Ray
processes left on the machine, and landed files changed or lost (sha256); then, where the fault
failed the run, it reruns the same job without a fault: `recovered` counts the runs that finished.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

KINDS = ["job_exit", "worker_kill", "run_terminated", "run_killed", "head_killed", "never_ready", "corrupt_files"]
WORLD: dict[str, Any] = {"users": 800, "quests": 120, "impressions_per_day": 12_000, "requests_per_day": 300}
DAYS = 3
SMOKE = {"tasks": 6, "draws": 2_000_000}  # a job of ~15 s on one worker: long enough to hit mid-run
TRAIN = {"epochs": 3, "workers": 2, "data_window": 3, "batch_size": 1024}
RUN_TIMEOUT_S = 600


@dataclass
class Trial:
    """One faulted run and what it left."""

    index: int
    kind: str
    run_id: str = ""
    status: str = ""
    as_expected: bool = False
    detail: str = ""
    orphaned_clusters: int = 0
    leftover_processes: int = 0
    files_lost: int = 0
    retried: bool = False
    recovered: bool = False
    seconds: float = 0.0
    log: str = ""
    log_tag: str = ""
    leftovers: list[str] = field(default_factory=list[str])
    before: dict[str, str] = field(default_factory=dict[str, str])  # landed files' sha256 before the run


class Drill:
    """The drill's world: its instance, lake, emulator and the processes it started."""

    def __init__(self, work: Path, emulator: Any) -> None:
        self.work, self.emulator = work, emulator
        self.instance = dg.DagsterInstance.get()
        from discord_ml.quests.lake import Lake

        self.lake = Lake(os.environ["DML_DATA_ROOT"])
        self.baseline = set(self.processes())
        self.days: list[str] = []

    # --- runs ---------------------------------------------------------------------------------

    def launch(self, job: str, tag: str, **options: Any) -> tuple[subprocess.Popen[bytes], Path]:
        options.setdefault("tags", {})["chaos/trial"] = tag
        log = self.work / "logs" / f"{tag}.log"
        log.parent.mkdir(exist_ok=True)
        with log.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "bench.chaos_worker", job, json.dumps(options)],
                                    stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        return proc, log

    def run_of(self, tag: str, proc: subprocess.Popen[bytes], timeout: float = 180) -> dg.DagsterRun:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            exited = proc.poll() is not None  # before the lookup: a run created just before exiting is found
            runs = self.instance.get_runs(filters=dg.RunsFilter(tags={"chaos/trial": tag}), limit=1)
            if runs:
                return runs[0]
            if exited:
                break
            time.sleep(0.3)
        raise RuntimeError(f"run {tag} never started (worker exit {proc.poll()})")

    def wait_for(self, run_id: str, proc: subprocess.Popen[bytes], found: Callable[[str], bool],
                 timeout: float = 300) -> bool:  # fmt: skip
        """Until a line of the run's event log satisfies `found` (False: the run ended first)."""
        deadline, seen = time.monotonic() + timeout, 0
        while time.monotonic() < deadline:
            records = self.instance.all_logs(run_id)
            if any(found(r.user_message) for r in records[seen:]):
                return True
            seen = len(records)
            if proc.poll() is not None:
                return False
            time.sleep(0.2)
        return False

    def finish(self, proc: subprocess.Popen[bytes], timeout: float = RUN_TIMEOUT_S) -> None:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def status(self, run_id: str) -> str:
        run = self.instance.get_run_by_id(run_id)
        return run.status.value if run else "MISSING"

    def failure_text(self, run_id: str) -> str:
        texts = []
        for record in self.instance.all_logs(run_id):
            event = record.dagster_event
            error = getattr(event.event_specific_data, "error", None) if event else None
            if error is not None:
                texts.append(error.to_string())  # with its causes: the step's own error is one of them
            elif event is not None and event.event_type_value == "RUN_FAILURE":
                texts.append(record.user_message)
        return "\n".join(texts)

    def run_clean(self, job: str, tag: str, **options: Any) -> tuple[str, str]:
        """A run without a fault: (run id, final status)."""
        proc, _ = self.launch(job, tag, **options)
        self.finish(proc)
        run = self.run_of(tag, proc, timeout=5)
        return run.run_id, self.status(run.run_id)

    # --- checks -------------------------------------------------------------------------------

    def sweep(self) -> list[str]:
        """One tick of the sweeper sensor per backend, as the daemon would run it."""
        from discord_ml.orchestration.resources import RayClusterResource
        from discord_ml.orchestration.sweeper import ray_cluster_sweeper

        said = []
        for backend in ("local", "kuberay"):
            resources = {"ray_cluster": RayClusterResource(backend=backend)}
            with dg.build_sensor_context(instance=self.instance, resources=resources) as context:
                result = ray_cluster_sweeper(context)
            said.append(str(getattr(result, "skip_message", result)))
        return said

    def clusters(self) -> list[str]:
        from discord_ml.cluster.local.provider import LocalRayProvider

        return [f"local/{c.name}" for c in LocalRayProvider().list()] + [
            f"kuberay/{n}" for n in self.emulator.ray_clusters()
        ]

    def processes(self) -> dict[int, str]:
        """The drill's processes: run workers, and every Ray process of its clusters (all carry the
        drill's DAGSTER_HOME/DML_HOME in their environment, job drivers in sessions of their own too)."""
        from discord_ml.cluster.local.processes import processes_using

        return {pid: _cmdline(str(pid)) for pid in processes_using(str(self.work))}

    def leftovers(self, settle_s: float = 15.0) -> list[str]:
        """The drill's processes still running after a run ended (a process on its way out within
        `settle_s` is not left over)."""
        deadline = time.monotonic() + settle_s
        while True:
            left = {pid: cmd for pid, cmd in self.processes().items() if pid not in self.baseline}
            if not left or time.monotonic() > deadline:
                return [f"{pid} {cmd[:120]}" for pid, cmd in left.items()]
            time.sleep(0.5)

    def landing_hashes(self) -> dict[str, str]:
        root = Path(self.lake.path("landing"))
        return {str(p.relative_to(root)): _sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


# --- the faults ---------------------------------------------------------------------------------


def _smoke_options(**resource: Any) -> dict[str, Any]:
    return {"run_config": {"ops": {"ray_cluster_check": {"config": SMOKE}},
                           "resources": {"ray_cluster": {"config": {"workers": 1, **resource}}}}}  # fmt: skip


def _start(drill: Drill, trial: Trial, job: str, options: dict[str, Any]) -> subprocess.Popen[bytes]:
    """Launch the trial's run; its id and log file go on the trial."""
    trial.log_tag = str(trial.index)
    proc, log = drill.launch(job, trial.log_tag, **json.loads(json.dumps(options)))
    trial.log = str(log)
    trial.run_id = drill.run_of(trial.log_tag, proc).run_id
    return proc


def _smoke_running(drill: Drill, trial: Trial) -> tuple[subprocess.Popen[bytes], bool]:
    """A `platform_check` run, once its Ray job's driver runs (False: the run ended first)."""
    proc = _start(drill, trial, "platform_check", _smoke_options())
    return proc, drill.wait_for(trial.run_id, proc, lambda m: m.startswith("connected to Ray"))


def fault_job_exit(drill: Drill, trial: Trial) -> tuple[str, dict[str, Any]]:
    proc, running = _smoke_running(drill, trial)
    if running:
        _kill(_pids_with(drill, "discord_ml.orchestration.smoke"))
    drill.finish(proc)
    trial.as_expected = "ended FAILED" in drill.failure_text(trial.run_id)
    return "platform_check", _smoke_options()


def fault_worker_kill(drill: Drill, trial: Trial) -> tuple[str, dict[str, Any]]:
    options = {"assets": ["ranking_model"], "tags": {"dagster/partition": drill.days[-1]},
               "run_config": {"ops": {"ranking_model": {"config": TRAIN}}}}  # fmt: skip
    proc = _start(drill, trial, "quests_retrain", options)
    killed: list[int] = []
    if drill.wait_for(trial.run_id, proc, lambda m: m.startswith("train epoch")):
        time.sleep(3)  # Ray Train's controller registers the epoch's checkpoint on its next poll (2 s)
        killed = _pids_with(drill, "ray::RayTrainWorker")[:1]
        _kill(killed)
    drill.finish(proc)
    messages = " ".join(r.user_message for r in drill.instance.all_logs(trial.run_id))
    trial.detail = f"killed {killed}"
    trial.as_expected = bool(killed) and drill.status(trial.run_id) == "SUCCESS" and "train resumed" in messages
    return "quests_retrain", options


def fault_run_terminated(drill: Drill, trial: Trial) -> tuple[str, dict[str, Any]]:
    proc, running = _smoke_running(drill, trial)
    if running:
        # What Dagster's terminate does with a run worker it cannot reach by gRPC: mark, then signal.
        current = drill.instance.get_run_by_id(trial.run_id)
        assert current is not None
        drill.instance.report_run_canceling(current, message="chaos drill: terminate")
        proc.send_signal(signal.SIGTERM)
    drill.finish(proc)
    stopped = not _pids_with(drill, "discord_ml.orchestration.smoke")
    trial.as_expected = drill.status(trial.run_id) == "CANCELED" and stopped
    return "platform_check", _smoke_options()


def fault_run_killed(drill: Drill, trial: Trial) -> tuple[str, dict[str, Any]]:
    proc, running = _smoke_running(drill, trial)
    if running:
        proc.kill()
    drill.finish(proc)
    left_behind = len(drill.clusters())  # nothing tore down: the cluster is still there...
    said = drill.sweep()  # ...until the sweeper's tick
    trial.detail = "; ".join(said)
    trial.as_expected = left_behind == 1 and "the run worker crashed" in said[0]
    return "platform_check", _smoke_options()


def fault_head_killed(drill: Drill, trial: Trial) -> tuple[str, dict[str, Any]]:
    from discord_ml.cluster.local.provider import LocalRayProvider

    proc, running = _smoke_running(drill, trial)
    if running:
        [cluster] = LocalRayProvider().registry.all()
        head = next(n for n in cluster.nodes if n["role"] == "head")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(int(head["pid"]), signal.SIGKILL)
    drill.finish(proc)
    trial.as_expected = "was lost while job" in drill.failure_text(trial.run_id)
    return "platform_check", _smoke_options()


def fault_never_ready(drill: Drill, trial: Trial) -> tuple[str, dict[str, Any]]:
    drill.emulator.default_mode = "pending"
    try:
        proc = _start(drill, trial, "platform_check", _smoke_options(backend="kuberay", ready_timeout_s=5))
        drill.finish(proc)
    finally:
        drill.emulator.default_mode = "run"
    trial.as_expected = "not ready after 5s" in drill.failure_text(trial.run_id)
    return "platform_check", _smoke_options(backend="kuberay")  # the retry: the cluster schedules now


def fault_corrupt_files(drill: Drill, trial: Trial) -> tuple[str, dict[str, Any]]:
    import datetime as dt

    day = drill.days[trial.index % len(drill.days)]
    directory = Path(drill.lake.impressions_dir(dt.date.fromisoformat(day)))
    bad = directory / f"part-chaos-{trial.index}.parquet"
    good = sorted(directory.glob("part-*.parquet"))[0]
    # Truncated (a copy cut short) or not Parquet at all, in turn.
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2] if trial.index % 2 else b"not parquet\n" * 100)
    trial.before = drill.landing_hashes()
    try:
        drill.finish(_start(drill, trial, "quests_prep", {"tags": {"dagster/partition": day}}))
        trial.files_lost = _changed(trial.before, drill.landing_hashes())
    finally:
        bad.unlink(missing_ok=True)  # the upstream re-lands the day; later trials see it whole
    messages = " ".join(r.user_message for r in drill.instance.all_logs(trial.run_id))
    quarantined = "quarantining file" in messages and bad.name in messages
    trial.as_expected = drill.status(trial.run_id) == "SUCCESS" and quarantined
    return "", {}


FAULTS: dict[str, Callable[[Drill, Trial], tuple[str, dict[str, Any]]]] = {
    "job_exit": fault_job_exit,
    "worker_kill": fault_worker_kill,
    "run_terminated": fault_run_terminated,
    "run_killed": fault_run_killed,
    "head_killed": fault_head_killed,
    "never_ready": fault_never_ready,
    "corrupt_files": fault_corrupt_files,
}


def run_trial(drill: Drill, index: int, kind: str) -> Trial:
    trial = Trial(index, kind)
    started = time.monotonic()
    trial.before = drill.landing_hashes()
    try:
        retry_job, retry_options = FAULTS[kind](drill, trial)
        trial.status = drill.status(trial.run_id) if trial.run_id else "NOT STARTED"
    except Exception as exc:  # the drill reports what broke instead of stopping
        trial.detail, retry_job, retry_options = f"drill error: {type(exc).__name__}: {exc}", "", {}
    drill.sweep()
    trial.orphaned_clusters = len(drill.clusters())
    trial.leftovers = drill.leftovers()
    trial.leftover_processes = len(trial.leftovers)
    if kind != "corrupt_files":
        trial.files_lost = _changed(trial.before, drill.landing_hashes())
    if trial.status == "SUCCESS":
        trial.recovered = True
    elif retry_job:
        trial.retried = True
        options = json.loads(json.dumps(retry_options))
        options.get("tags", {}).pop("chaos/trial", None)
        _, status = drill.run_clean(retry_job, f"{index}-retry", **options)
        trial.recovered = status == "SUCCESS"
        drill.sweep()
        trial.orphaned_clusters += len(drill.clusters())
        more = drill.leftovers()
        trial.leftovers += more
        trial.leftover_processes += len(more)
    trial.seconds = round(time.monotonic() - started, 1)
    _cleanup(drill)  # what this trial left must not count against the next one
    return trial


# --- helpers ------------------------------------------------------------------------------------


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _pids_with(drill: Drill, marker: str) -> list[int]:
    return [pid for pid, cmd in drill.processes().items() if marker in cmd]


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _changed(before: dict[str, str], after: dict[str, str]) -> int:
    return sum(1 for name, digest in before.items() if after.get(name) != digest)


def _cleanup(drill: Drill) -> None:
    from discord_ml.cluster.local.provider import LocalRayProvider

    provider = LocalRayProvider()
    for cluster in provider.list():
        provider.delete(cluster.name, namespace=cluster.namespace)
    drill.emulator.stop_all()
    _kill([pid for pid in drill.processes() if pid not in drill.baseline])


@contextlib.contextmanager
def _environment(keep: bool) -> Iterator[Path]:
    """A fresh DAGSTER_HOME, DML_HOME and lake for the drill, in a temp dir."""
    work = Path(tempfile.mkdtemp(prefix="dml-chaos-"))
    saved = dict(os.environ)
    (work / "dagster").mkdir()
    (work / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    os.environ.update({"DAGSTER_HOME": str(work / "dagster"), "DML_HOME": str(work / "home"),
                       "DML_DATA_ROOT": str(work / "lake"), "RAY_USAGE_STATS_ENABLED": "0",
                       "DML_KUBERAY_DASHBOARD": "service-ip"})  # fmt: skip
    try:
        yield work
    finally:
        os.environ.clear()
        os.environ.update(saved)
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def _prepare(drill: Drill) -> None:
    from discord_ml.quests.ml.world import WorldConfig, generate

    landed = generate(drill.lake, days=DAYS, config=WorldConfig(**WORLD))
    drill.days = [str(day["date"]) for day in landed]
    first, last = drill.days[0], drill.days[-1]
    tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
    run_id, status = drill.run_clean("quests_prep", "setup", tags=tags)
    if status != "SUCCESS":
        raise SystemExit(f"setup: prep of {first}..{last} ended {status} (run {run_id}); see {drill.work}/logs")


def report(trials: list[Trial], kinds: list[str], seconds: float, as_json: bool) -> dict[str, Any]:
    by_kind: dict[str, Counter[str]] = {k: Counter() for k in kinds}
    for t in trials:
        c = by_kind[t.kind]
        c.update(runs=1, as_expected=int(t.as_expected), orphaned_clusters=t.orphaned_clusters,
                 leftover_processes=t.leftover_processes, files_lost=t.files_lost, retried=int(t.retried),
                 recovered=int(t.recovered))  # fmt: skip
    summary = {
        "runs": len(trials),
        "fault_kinds": sorted({t.kind for t in trials}),
        "orphaned_clusters": sum(t.orphaned_clusters for t in trials),
        "leftover_processes": sum(t.leftover_processes for t in trials),
        "files_lost": sum(t.files_lost for t in trials),
        "recovered": sum(t.recovered for t in trials),
        "as_expected": sum(t.as_expected for t in trials),
        "seconds": round(seconds, 1),
        "per_kind": {k: dict(v) for k, v in by_kind.items() if v},
    }
    columns = ["runs", "as_expected", "recovered", "orphaned_clusters", "leftover_processes", "files_lost"]
    print(f"\n{'fault':<16}" + "".join(f"{c:>20}" for c in columns))
    for kind, counts in summary["per_kind"].items():
        print(f"{kind:<16}" + "".join(f"{counts.get(c, 0):>20}" for c in columns))
    print(f"{'total':<16}" + "".join(f"{summary[c]:>20}" for c in columns))
    print(f"{len(trials)} runs in {seconds:.0f}s")
    for t in trials:
        if t.leftovers or not t.as_expected or not t.recovered or t.orphaned_clusters or t.files_lost:
            print(f"  run {t.index} {t.kind}: {t.status} {t.detail} leftovers={t.leftovers} log={t.log}")
    if as_json:
        summary["trials"] = [
            {k: v for k, v in asdict(t).items() if k not in ("log", "log_tag", "before")} for t in trials
        ]
        print(json.dumps(summary))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=len(KINDS), help="faulted runs (kinds are cycled)")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated fault kinds to cycle through")
    parser.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    parser.add_argument("--keep", action="store_true", help="keep the drill's temp dir (instance, lake, run logs)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=dg.BetaWarning)  # notices for the project's developers
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or args.runs < 1:
        parser.error(f"--kinds: unknown {unknown}; choose from {', '.join(KINDS)}" if unknown else "--runs must be ≥ 1")
    from discord_ml_tests.support.k8s_emulator import serve
    from discord_ml_tests.support.schemas import crd_dir

    if "never_ready" in kinds and not (crd_dir() / "ray.io_rayclusters.yaml").is_file():
        print(f"never_ready skipped: KubeRay CRDs not found at {crd_dir()} (set DML_KUBERAY_CRDS)", file=sys.stderr)
        kinds.remove("never_ready")
    started = time.monotonic()
    with _environment(args.keep) as work, serve(work) as (emulator, kubeconfig):
        os.environ["KUBECONFIG"] = str(kubeconfig)
        drill = Drill(work, emulator)
        try:
            print(f"chaos drill in {work}: {args.runs} runs over {', '.join(kinds)}", flush=True)
            _prepare(drill)
            trials = []
            for index in range(args.runs):
                trial = run_trial(drill, index, kinds[index % len(kinds)])
                trials.append(trial)
                print(f"run {index} {trial.kind}: {trial.status}, expected={trial.as_expected}, "
                      f"recovered={trial.recovered}, clusters={trial.orphaned_clusters}, "
                      f"processes={trial.leftover_processes}, files={trial.files_lost} ({trial.seconds}s)",
                      flush=True)  # fmt: skip
        finally:
            _cleanup(drill)
            drill.instance.dispose()
    summary = report(trials, kinds, time.monotonic() - started, args.json)
    clean = not (summary["orphaned_clusters"] or summary["leftover_processes"] or summary["files_lost"])
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
