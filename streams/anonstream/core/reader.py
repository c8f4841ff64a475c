"""Reading a pipeline file: the error it raises and typed getters that know their path.

Every problem names the file, the path in the document (`fields.ip.ipv4_bits`) and the
reason, so a wrong file can be fixed without reading code.
"""

from __future__ import annotations

import math
import re
from typing import Any


class PipelineError(ValueError):
    """A pipeline file is wrong. The message names the file, the field path and the reason."""

    def __init__(self, source: str, path: str, reason: str) -> None:
        super().__init__(f"{source}: {path}: {reason}")
        self.source = source
        self.path = path
        self.reason = reason


INT_MAX = 2**31 - 1  # the largest k, version or contribution bound a pipeline may declare
_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)?\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, None: 1000}


def finite_number(value: object) -> float | None:
    """A YAML number as a float, or None: not a number, a boolean (Python's bool is an
    int: `true` is no 1), infinite or NaN (`.inf`, `.nan`), or an integer too large for a
    float (`1` and 400 zeros made float() raise OverflowError, a traceback from validate).
    Every number of a pipeline file that becomes a float is read through this."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        f = float(value)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def parse_duration_ms(value: object) -> int:
    """'90s', '5m', '1h', '1d', '250ms' or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 5m or 1h")
    if isinstance(value, int):
        return value * 1000
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError(f"expected a duration like 5m or 1h, got {value!r}")
    return int(m.group(1)) * _UNIT_MS[m.group(2)]


class Reader:
    """Small helper that knows where it is in the document, for readable errors."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, reason: str) -> PipelineError:
        return PipelineError(self.source, path, reason)

    def mapping(self, obj: object, path: str) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise self.fail(path, f"expected a mapping, got {type(obj).__name__}")
        return obj

    def string_list(self, obj: object, path: str) -> tuple[str, ...]:
        if obj is None:
            return ()
        if isinstance(obj, str):
            return (obj,)
        if not isinstance(obj, list) or not all(isinstance(x, str) for x in obj):
            raise self.fail(path, "expected a list of field names")
        return tuple(obj)

    def positive_int(self, obj: object, path: str, minimum: int = 1) -> int:
        if isinstance(obj, bool) or not isinstance(obj, int) or obj < minimum:
            raise self.fail(path, f"expected an integer >= {minimum}, got {obj!r}")
        if obj > INT_MAX:  # released as JSON and compared in int64 columns
            raise self.fail(path, f"expected an integer <= {INT_MAX}, got {obj!r}")
        return obj

    def duration(self, obj: object, path: str) -> int:
        try:
            return parse_duration_ms(obj)
        except ValueError as exc:
            raise self.fail(path, str(exc)) from None

    def unknown_keys(self, d: dict[str, Any], allowed: set[str], path: str) -> None:
        extra = sorted(set(d) - allowed)
        if extra:
            raise self.fail(f"{path}.{extra[0]}" if path else extra[0], "unknown key")
