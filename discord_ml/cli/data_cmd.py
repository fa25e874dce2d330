"""`dml data`: land synthetic quests data the way the upstream export does, and see what is there."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from discord_ml.cli.common import Output, check_output, fail, print_json, print_table

app = typer.Typer(help="Synthetic quests data: generate days, list what landed.", no_args_is_help=True)

Root = Annotated[str | None, typer.Option("--root", help="Data root, a path or URL (default: DML_DATA_ROOT).")]


@app.command()
def generate(
    days: Annotated[int, typer.Option("--days", min=1, max=366, help="Days to land.")] = 4,
    root: Root = None,
    impressions_per_day: Annotated[int | None, typer.Option(min=100, help="Impressions per day (new world).")] = None,
    users: Annotated[int | None, typer.Option(min=10, help="Users in the world (new world).")] = None,
    quests: Annotated[int | None, typer.Option(min=10, help="Quests in the world (new world).")] = None,
    seed: Annotated[int | None, typer.Option(help="World seed (new world).")] = None,
    start: Annotated[str | None, typer.Option(help="First day of the world, YYYY-MM-DD (new world).")] = None,
    bad_row_rate: Annotated[float | None, typer.Option(min=0.0, max=0.5, help="Share of corrupt rows.")] = None,
    output: Output = "table",
) -> None:
    """Land the next DAYS days of impressions (with their completion markers), tomorrow's request
    slates and the eval-only true probabilities. A new root takes the world options; an existing
    one continues its own world after its last landed day."""
    check_output(output)
    from discord_ml.quests.lake import Lake, LakeError, default_root, parse_date
    from discord_ml.quests.ml.world import WorldConfig, generate

    options: dict[str, Any] = {"impressions_per_day": impressions_per_day, "users": users, "quests": quests,
                               "seed": seed, "start": start, "bad_row_rate": bad_row_rate}  # fmt: skip
    options = {k: v for k, v in options.items() if v is not None}
    try:
        if start is not None:
            parse_date(start, field="--start")
        config = WorldConfig(**options) if options else None
        landed = generate(Lake(root or default_root()), days=days, config=config)
    except (LakeError, ValueError, OSError) as exc:
        fail(str(exc))
    if output == "json":
        print_json(landed)
        return
    rows = [[d["date"], str(d["impressions"]), str(d["requests"])] for d in landed]
    print_table(f"landed under {root or default_root()}", ["date", "impressions", "next-day requests"], rows)


@app.command("list")
def list_days(root: Root = None, output: Output = "table") -> None:
    """Landed days and how far the pipeline got with each (features, quarantined rows)."""
    check_output(output)
    from discord_ml.quests.lake import Lake, date_str, default_root

    lake = Lake(root or default_root())
    rows = []
    for day in lake.landed_days():
        rows.append({"date": date_str(day), "features": lake.complete(lake.features_dir(day)),
                     "quarantine": lake.complete(lake.quarantine_dir(day))})  # fmt: skip
    if output == "json":
        print_json(rows)
        return
    table = [[r["date"], "yes" if r["features"] else "-", "yes" if r["quarantine"] else "-"] for r in rows]
    print_table(lake.root, ["date", "features", "quarantine"], table)
