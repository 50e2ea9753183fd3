"""Typed reading of user-given config values: each failure is a :class:`ConfigError` naming the key.

:func:`coerce` reads a composed section into its schema's declared types (a plain dict: the job's record);
:func:`typed` gives the schema's dataclass instance, the form every consumer reads."""

from __future__ import annotations

import dataclasses
import math
import typing
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


def _coerce_value(value: Any, kind: Any, where: str, meta: dict[str, Any]) -> Any:
    optional = typing.get_origin(kind) is typing.Union and type(None) in typing.get_args(kind)
    if optional:
        if value is None:
            return None
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    minimum = meta.get("minimum")
    if kind is int:
        return integer(value, where, minimum=minimum)
    if kind is float:
        return float(number(value, where))
    if kind is bool:
        return boolean(value, where)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}={value!r}: must be a string")
        if meta.get("choices") and value not in meta["choices"]:
            raise ConfigError(f"{where}={value!r}: allowed values are {meta['choices']}")
        return value
    if kind is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}={value!r}: must be a list of strings, e.g. [mlp]")
        return value
    if kind is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}={value!r}: must be a mapping")
        return value
    if dataclasses.is_dataclass(kind):
        return coerce(value, kind, where)
    return value


def coerce(values: Any, schema: type, where: str) -> dict[str, Any]:
    """``values`` (a composed section) with every key of ``schema`` read into its declared type."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}={values!r}: must be a config section (see docs/configuration.md)")
    hints = typing.get_type_hints(schema)
    known = {f.name: f for f in dataclasses.fields(schema)}
    extra = sorted(set(values) - set(known))
    if extra:
        raise ConfigError(f"{where}: unknown key(s) {extra}; allowed: {sorted(known)}")
    missing = sorted(n for n, f in known.items() if f.default == "???" and n not in values)
    if missing:
        raise ConfigError(f"{where}: missing key(s) {missing} (see docs/configuration.md)")
    out = dict(values)
    for name, spec in known.items():
        if name in values:
            out[name] = _coerce_value(values[name], hints[name], f"{where}.{name}", dict(spec.metadata))
    return out


def instance(schema: type, values: dict[str, Any]):
    """The ``schema`` dataclass built from already coerced ``values`` (nested sections included)."""
    hints = typing.get_type_hints(schema)
    fields = {}
    for spec in dataclasses.fields(schema):
        if spec.name in values:
            value, kind = values[spec.name], hints[spec.name]
            fields[spec.name] = instance(kind, value) if dataclasses.is_dataclass(kind) and isinstance(value, dict) \
                else value
    return schema(**fields)


def typed(values: Any, schema: type, where: str):
    """``values`` read into an instance of ``schema`` (:func:`coerce`, then :func:`instance`)."""
    return instance(schema, coerce(values, schema, where))
