"""Typed reading of user-given config values: each failure is a :class:`ConfigError` naming the key."""

from __future__ import annotations

import math
from typing import Any

from copal_exp.errors import ConfigError


def integer(value: Any, key: str, minimum: int | None = None, allow_none: bool = False) -> int | None:
    """``value`` as an int, or :class:`ConfigError` naming ``key`` (no silent truncation of 2.7)."""
    if value is None and allow_none:
        return None
    at_least = f" at least {minimum}" if minimum is not None else ""
    allowed = f"an integer{at_least}" + (" or null" if allow_none else "")
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{key}={value!r}: must be {allowed}")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{key}={value!r}: not a number; must be {allowed}") from None
    if not math.isfinite(number) or number != int(number):
        raise ConfigError(f"{key}={value!r}: must be {allowed}, not a fraction")
    if minimum is not None and int(number) < minimum:
        raise ConfigError(f"{key}={value!r}: must be {allowed}")
    return int(number)


def number(value: Any, key: str, positive: bool = False) -> float:
    """``value`` as a finite float, or :class:`ConfigError` naming ``key``."""
    allowed = "a finite number" + (" > 0" if positive else "")
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{key}={value!r}: must be {allowed}")
    try:
        x = float(value)
    except ValueError:
        raise ConfigError(f"{key}={value!r}: not a number; must be {allowed}") from None
    if not math.isfinite(x) or (positive and x <= 0):
        raise ConfigError(f"{key}={value!r}: must be {allowed}")
    return x


def boolean(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r}: allowed values are true, false")
    return value
