"""Reading the `fields:` section of a pipeline file: one FieldAction per contract field.

An action is checked against the field's sensitivity class and type (core/actions.py), a
generalizer's options are read by its registered class (core/generalizers.py), and any
option left over is an error: nothing in a field's entry is silently ignored.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from anonstream.core.actions import ACTIONS, ALLOWED, OTHER, Action, FieldAction
from anonstream.core.contract import FieldSpec, FieldType
from anonstream.core.generalizers import GENERALIZERS as _GENERALIZER_CLASSES
from anonstream.core.reader import Reader, finite_number
from anonstream.core.scrub import scrub_identifiers

GENERALIZERS = tuple(_GENERALIZER_CLASSES)  # their names, in registration order
# release.band_histograms keeps each person's bands as bits of one int64 (with one bit
# to spare for its masks): at most 62 bands. More than that would overflow silently.
MAX_EDGES = 61

_RESERVED_VALUES = frozenset({OTHER, "(none)", "(*)", "*", "<invalid>"})
MAX_ALLOWED_VALUE_LEN = 80


def _action_and_params(r: Reader, raw: object, path: str) -> tuple[str, dict[str, Any]]:
    """The action a field entry names, and its options (a generalize entry's generalizer
    under the key `generalizer`)."""
    if isinstance(raw, str):
        return raw, {}
    if not isinstance(raw, dict) or len(raw) < 1:
        raise r.fail(path, f"expected an action ({', '.join(ACTIONS)})")
    keys = [k for k in raw if k in ACTIONS]
    if len(keys) != 1:
        raise r.fail(path, f"name exactly one action of {', '.join(ACTIONS)}")
    action = keys[0]
    params = {k: v for k, v in raw.items() if k != action}
    if action == Action.GENERALIZE:
        params["generalizer"] = raw[action]
    elif action == Action.KEEP and raw[action] not in (True, None):
        # keep: {values: [...]}: the options of keep sit under it
        params.update(r.mapping(raw[action], f"{path}.keep"))
    return action, params


def _check_action(r: Reader, spec: FieldSpec, raw_action: str, path: str) -> Action:
    """The action, if it exists and suits the field's sensitivity class and type."""
    if raw_action not in ACTIONS:
        raise r.fail(path, f"unknown action {raw_action!r}; expected one of {', '.join(ACTIONS)}")
    action = Action(raw_action)
    allowed = ALLOWED[spec.sensitivity]
    if action not in allowed:
        raise r.fail(
            path,
            f"action {raw_action!r} is not allowed for a {spec.sensitivity.value} field "
            f"(allowed: {', '.join(sorted(allowed))})",
        )
    if action is Action.DEDUPE and spec.name != "event_id":
        raise r.fail(path, "only event_id can be used for duplicate detection")
    if action is Action.WINDOW and spec.type is not FieldType.TIMESTAMP:
        raise r.fail(path, "only the event time can be the window field")
    if spec.type is FieldType.OBJECT and action is not Action.DROP:
        raise r.fail(path, "nested objects can only be dropped")
    if action is Action.MEASURE and spec.type is not FieldType.INT:
        raise r.fail(path, "only numeric fields can be measured")
    return action


def _generalizer(r: Reader, spec: FieldSpec, params: dict[str, Any], path: str) -> dict[str, Any]:
    """The generalizer's name and its own options (parsed by its registered class)."""
    g = params.pop("generalizer", None)
    if g is None:
        raise r.fail(path, f"name the generalizer: {{generalize: one of {GENERALIZERS}}}")
    if not isinstance(g, str) or g not in GENERALIZERS:
        raise r.fail(path, f"unknown generalizer {g!r}; expected one of {GENERALIZERS}")
    return {"generalizer": g, **_GENERALIZER_CLASSES[g].parse(spec, params, path, r.fail)}


def _edges(r: Reader, params: dict[str, Any], path: str) -> tuple[float, ...]:
    edges = params.pop("edges", None) or params.pop("bands", None)
    read = [finite_number(e) for e in edges] if isinstance(edges, list) else []
    floats = [e for e in read if e is not None]
    if not read or len(floats) < len(read) or any(a >= b for a, b in pairwise(floats)):
        raise r.fail(f"{path}.edges", "expected a strictly increasing list of numbers")
    if len(edges) > MAX_EDGES:
        raise r.fail(f"{path}.edges", f"at most {MAX_EDGES} edges, got {len(edges)}")
    return tuple(floats)


def _measure(r: Reader, params: dict[str, Any], path: str) -> dict[str, Any]:
    """A measure's clamp (the bounds of one event) and its per-person sum bound."""
    clamp = params.pop("clamp", None)
    if (
        not isinstance(clamp, list)
        or len(clamp) != 2
        or (lo := finite_number(clamp[0])) is None
        or (hi := finite_number(clamp[1])) is None
        or lo > hi
    ):
        raise r.fail(f"{path}.clamp", "a measure needs clamp: [low, high], the bounds of one event")
    raw_bound = params.pop("max_sum_per_unit", None)
    if raw_bound is None:  # default: one event's worth per person and cell
        bound: float | None = max(abs(lo), abs(hi))
    elif (bound := finite_number(raw_bound)) is None or not bound > 0:
        raise r.fail(
            f"{path}.max_sum_per_unit",
            "expected a positive number: the most one person adds to one cell's sum",
        )
    return {"clamp": (lo, hi), "max_sum_per_unit": bound}


def field_action(r: Reader, spec: FieldSpec, raw: object, path: str) -> FieldAction:
    raw_action, params = _action_and_params(r, raw, path)
    action = _check_action(r, spec, raw_action, path)
    kw: dict[str, Any] = {}
    if action is Action.GENERALIZE:
        kw.update(_generalizer(r, spec, params, path))
    if action in (Action.MEASURE, Action.GENERALIZE) and ("edges" in params or "bands" in params):
        kw["edges"] = _edges(r, params, path)
    generalizer = _GENERALIZER_CLASSES.get(kw.get("generalizer", ""))
    if generalizer is not None and generalizer.needs_edges and not kw.get("edges"):
        raise r.fail(f"{path}.edges", f"{generalizer.name} needs edges")
    if action is Action.MEASURE:
        kw.update(_measure(r, params, path))
    if action is Action.KEEP and "values" in params:
        kw["values"] = _allowed_values(r, params.pop("values"), f"{path}.keep.values")
    if params:
        raise r.fail(f"{path}.{sorted(params)[0]}", f"unknown option for {action}")
    return FieldAction(field=spec.name, action=action, **kw)


def _allowed_values(r: Reader, raw: object, path: str) -> tuple[str, ...]:
    """An allow-list of a kept field: distinct, short, printable strings that are neither
    a marker of the release format nor changed by scrubbing (they are released as is)."""
    if not isinstance(raw, list) or not raw:
        raise r.fail(path, "expected a non-empty list of strings")
    for v in raw:
        if not isinstance(v, str) or not v or not v.isprintable() or v.isspace():
            raise r.fail(path, f"expected printable strings, got {v!r}")
        if len(v) > MAX_ALLOWED_VALUE_LEN:
            raise r.fail(path, f"a value is longer than {MAX_ALLOWED_VALUE_LEN} characters")
        if v in _RESERVED_VALUES:
            raise r.fail(path, f"{v!r} is a marker of the release format")
        if scrub_identifiers(v) != v:
            raise r.fail(path, "a value looks like an identifier (scrubbing would change it)")
    if len(set(raw)) != len(raw):
        raise r.fail(path, "a value is listed twice")
    return tuple(raw)
