"""One Dagster run of the chaos drill, in a process of its own (what `dagster api execute_run` is to a
run launcher): the drill signals or kills this process without touching its own.

    python -m bench.chaos_worker JOB '{"tags": {...}, "run_config": {...}, "assets": [...]}'
"""

import json
import sys
import warnings

import dagster as dg


def _job(name: str) -> dg.JobDefinition:
    from discord_ml.definitions import defs  # after main() has set the warning filters

    return defs.resolve_job_def(name)


def quests_prep() -> dg.JobDefinition:
    return _job("quests_prep")


def quests_retrain() -> dg.JobDefinition:
    return _job("quests_retrain")


def platform_check() -> dg.JobDefinition:
    return _job("platform_check")


JOBS = {"quests_prep": quests_prep, "quests_retrain": quests_retrain, "platform_check": platform_check}


def main() -> int:
    warnings.filterwarnings("ignore", category=dg.BetaWarning)  # notices for the project's developers
    job, options = sys.argv[1], json.loads(sys.argv[2])
    assets = [dg.AssetKey(a) for a in options.get("assets", [])] or None
    with dg.DagsterInstance.get() as instance:
        result = dg.execute_job(
            dg.reconstructable(JOBS[job]),
            instance=instance,
            run_config=options.get("run_config", {}),
            tags=options.get("tags", {}),
            asset_selection=assets,
            raise_on_error=False,
        )
    print(f"run {result.run_id}: {'SUCCESS' if result.success else 'FAILURE'}", flush=True)
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
