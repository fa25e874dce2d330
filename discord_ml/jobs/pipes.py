"""Dagster Pipes over the Ray Jobs API: context in through runtime-env variables, messages back
through the job's own log stream (so it works wherever the Jobs API works, no shared storage)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg

PIPES_KEY = "__dagster_pipes_version"


class PipesRayJobLogReader(dg.PipesMessageReader):
    """Reads Pipes messages the Ray job writes to stdout (`open_dagster_pipes()` with defaults).

    Lines are fed to it by whoever follows the job's log (`feed`); message lines are handled and
    kept out of the ordinary log, every other line is left to the caller.
    """

    def __init__(self) -> None:
        self._handler: Any = None

    @contextmanager
    def read_messages(self, handler: Any) -> Iterator[dict[str, Any]]:
        self._handler = handler
        try:
            yield {"stdio": "stdout"}
        finally:
            self._handler = None

    def feed(self, line: str) -> bool:
        """Handle `line` if it is a Pipes message; True when it was one."""
        text = line.strip()
        if self._handler is None or not text.startswith("{") or PIPES_KEY not in text:
            return False
        try:
            message = json.loads(text)
        except json.JSONDecodeError:
            return False
        if not isinstance(message, dict) or PIPES_KEY not in message:
            return False
        self._handler.handle_message(message)
        return True

    def no_messages_debug_text(self) -> str:
        return (
            "Expected the Ray job to call dagster_pipes.open_dagster_pipes() with its default message "
            "writer, which prints messages to stdout, where the job's log stream carries them back."
        )
