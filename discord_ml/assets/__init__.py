"""Dagster assets of the discord_ml code location."""
