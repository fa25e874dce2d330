"""The `dml` command."""
