"""`dml usage`: CPU-hours, GPU-hours and estimated cost by owner or team, live and deleted clusters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from discord_ml.cli.common import Output, check_output, fail, print_json, print_table


def usage(
    by: Annotated[str, typer.Option("--by", help="owner or team.")] = "owner",
    since: Annotated[str, typer.Option("--since", help="Window length before --until, e.g. 7d, 24h.")] = "7d",
    until: Annotated[
        str | None, typer.Option("--until", help="Window end, ISO 8601 (e.g. 2026-11-30T00:00:00Z); default: now.")
    ] = None,
    backend: Annotated[
        list[str] | None, typer.Option("--backend", "-b", help="Backends whose live clusters count (repeatable).")
    ] = None,
    output: Output = "table",
) -> None:
    """Totals of live clusters (so far) and clusters deleted in the window (their archived life).

    Cost is the pool catalog's `price_per_node_hour` times each node share; `—` where a pool has no price.

    Example: dml usage --by team --since 30d -o json
    """
    from discord_ml.cli.common import provider
    from discord_ml.cluster.backends import default_backend
    from discord_ml.cluster.duration import parse_duration
    from discord_ml.cluster.usage import GROUPS, gather, money, totals

    check_output(output)
    if by not in GROUPS:
        fail(f"--by {by!r} is not supported; use one of: {', '.join(GROUPS)}")
    try:
        window = timedelta(seconds=parse_duration(since, field="--since"))
    except ValueError as exc:
        fail(str(exc))
    try:
        end = datetime.fromisoformat(until.replace("Z", "+00:00")) if until else datetime.now(UTC)
    except ValueError:
        fail(f"--until {until!r} is not a time; use ISO 8601, e.g. 2026-11-30T00:00:00Z")
    if end.tzinfo is None:
        end = end.replace(tzinfo=UTC)
    providers = {b: provider(b) for b in (backend or [default_backend()])}
    clusters, problems = gather(providers, since=window, until=end)
    rows = totals(clusters, by)
    for problem in problems:
        typer.echo(f"warning: {problem}", err=True)
    if output == "json":
        print_json({"by": by, "since": (end - window).isoformat(), "until": end.isoformat(), "totals": rows,
                    "clusters": [c.to_json() for c in clusters], "problems": problems})  # fmt: skip
        return
    table = [[r[by], str(r["clusters"]), f"{r['hours']:.1f}", f"{r['cpu_hours']:.1f}", f"{r['gpu_hours']:.1f}",
              money(r["cost"], r["unpriced_clusters"])] for r in rows]  # fmt: skip
    title = f"usage by {by}, {end - window:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC"
    print_table(title, [by, "clusters", "hours", "CPU-hours", "GPU-hours", "cost"], table)
