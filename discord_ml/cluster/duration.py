"""Durations such as `4h`, `90m`, `1h30m`, `2d` or plain seconds."""

from __future__ import annotations

import re

_PART = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str | int, *, field: str = "duration") -> int:
    """Seconds in `value`; raise ValueError naming the field, value and accepted forms."""
    if isinstance(value, bool):
        raise ValueError(f"{field}: {value!r} is not a duration; use e.g. '4h', '90m', '1h30m' or seconds")
    if isinstance(value, int):
        seconds = value
    else:
        text = value.strip().lower()
        if text.isdigit():
            seconds = int(text)
        elif text and _PART.sub("", text) == "":
            seconds = sum(int(n) * _UNITS[u] for n, u in _PART.findall(text))
        else:
            raise ValueError(f"{field}: {value!r} is not a duration; use e.g. '4h', '90m', '1h30m', '2d' or seconds")
    if seconds <= 0:
        raise ValueError(f"{field}: {value!r} must be longer than zero")
    return seconds


def format_duration(seconds: int) -> str:
    """Compact form: `4h`, `1h30m`, `45s`."""
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"


def human_age(seconds: float) -> str:
    """How long, for people: 34s, 12m, 5h3m, 2d4h."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60}m" if s % 3600 >= 60 else f"{s // 3600}h"
    return f"{s // 86400}d{s % 86400 // 3600}h"
