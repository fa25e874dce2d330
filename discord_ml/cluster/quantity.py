"""Kubernetes resource quantities (`64Gi`, `500m`, `16`): parse to numbers, format back.

Pure helpers so that specs can compare a request with a pool's node size exactly.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
            "k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9), "T": Decimal(10**12),
            "P": Decimal(10**15), "E": Decimal(10**18)}  # fmt: skip
_QUANTITY = re.compile(r"^(?P<num>[0-9]+(?:\.[0-9]+)?)(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]?)$")


class QuantityError(ValueError):
    """A string is not a Kubernetes resource quantity."""


def parse_quantity(value: str | int | float, *, field: str = "quantity") -> Decimal:
    """Parse a Kubernetes quantity into a number of base units (bytes, cores).

    Raises:
        QuantityError: naming `field`, the bad value and the accepted forms.
    """
    if isinstance(value, bool):
        raise QuantityError(f"{field}: {value!r} is not a quantity; use a number or a string such as '64Gi' or '500m'")
    if isinstance(value, int | float):
        if value < 0:
            raise QuantityError(f"{field}: {value!r} is negative; quantities must be >= 0")
        return Decimal(str(value))
    match = _QUANTITY.match(value.strip())
    if match is None:
        raise QuantityError(
            f"{field}: {value!r} is not a Kubernetes quantity; use forms such as '64Gi', '512Mi', '16', '500m'"
        )
    try:
        number = Decimal(match["num"])
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only valid decimals
        raise QuantityError(f"{field}: {value!r} is not a number") from exc
    suffix = match["suffix"]
    return number * (_BINARY[suffix] if suffix in _BINARY else _DECIMAL[suffix])


def format_bytes(num_bytes: Decimal | int) -> str:
    """The shortest exact binary-suffixed form (`64Gi`, `1536Mi`), or plain bytes."""
    value = int(num_bytes)
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        unit = _BINARY[suffix]
        if value >= unit and value % unit == 0:
            return f"{value // unit}{suffix}"
    return str(value)


def format_cpu(cores: Decimal | int | float) -> str:
    """Whole cores as an integer string, fractions as millicores (`500m`)."""
    millis = Decimal(str(cores)) * 1000
    if millis % 1000 == 0:
        return str(int(millis // 1000))
    return f"{int(millis)}m"
