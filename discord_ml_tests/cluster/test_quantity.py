"""Kubernetes quantities and durations parse exactly and fail with the accepted forms."""

from __future__ import annotations

from decimal import Decimal

import pytest

from discord_ml.cluster.duration import format_duration, parse_duration
from discord_ml.cluster.quantity import QuantityError, format_bytes, format_cpu, parse_quantity


@pytest.mark.parametrize(
    ("text", "expected"),
    [("64Gi", 64 * 2**30), ("512Mi", 512 * 2**20), ("1.5Gi", Decimal("1.5") * 2**30), ("16", 16),
     ("500m", Decimal("0.5")), ("2k", 2000), ("1G", 10**9), (3, 3)],
)  # fmt: skip
def test_parse_quantity(text: str | int, expected: Decimal | int) -> None:
    assert parse_quantity(text) == Decimal(expected)


@pytest.mark.parametrize("text", ["12GB", "-1", "lots", "1.2.3Gi", "", "Gi"])
def test_bad_quantity_names_field_and_forms(text: str) -> None:
    with pytest.raises(QuantityError, match=r"worker_memory: .* use forms such as '64Gi'"):
        parse_quantity(text, field="worker_memory")


def test_format_round_trips() -> None:
    assert format_bytes(64 * 2**30) == "64Gi"
    assert format_bytes(1536 * 2**20) == "1536Mi"
    assert format_bytes(1000) == "1000"
    assert format_cpu(Decimal("0.5")) == "500m"
    assert format_cpu(16) == "16"


@pytest.mark.parametrize(
    ("text", "seconds"), [("4h", 14400), ("90m", 5400), ("1h30m", 5400), ("2d", 172800), (600, 600)]
)
def test_durations(text: str | int, seconds: int) -> None:
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("text", ["4 hours", "h", "0", "-5m", "1y"])
def test_bad_duration(text: str) -> None:
    with pytest.raises(ValueError, match="ttl"):
        parse_duration(text, field="ttl")
