"""The README's main command: run the platform's job on the embedded local backend and print results.

Runs against the project's Dagster instance (`DAGSTER_HOME`), so the run also shows in `dagster dev`.
"""

from __future__ import annotations

import sys

import dagster as dg

from discord_ml.definitions import defs

JOB = "platform_check"


def main() -> int:
    instance = dg.DagsterInstance.get()
    job = defs.resolve_job_def(JOB)
    print(f"running Dagster job {JOB!r} (instance: {instance.root_directory})", flush=True)
    # INFO keeps the Ray job's own lines visible without Dagster's per-event DEBUG records.
    run_config = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
    result = job.execute_in_process(instance=instance, run_config=run_config, raise_on_error=False)
    print(f"run {result.run_id}: {'SUCCESS' if result.success else 'FAILURE'}")
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        print(f"\nasset {materialization.asset_key.to_user_string()}:")
        for key, value in materialization.metadata.items():
            print(f"  {key:<20} {value.value}")
    if not result.success:
        for event in result.all_events:
            if event.event_type == dg.DagsterEventType.STEP_FAILURE:
                error = event.step_failure_data.error
                print(error.to_string() if error else event.message, file=sys.stderr)
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
