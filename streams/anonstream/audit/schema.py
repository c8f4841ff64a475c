"""The output contract check of the audit: each record against the JSON schema of its
version (schemas/release-v1.json, release-v2.json for dp outputs), the errors said in words
that name schema facts but never the offending value."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, ValidationError
from jsonschema.exceptions import best_match

from anonstream.audit.values import key_path, safe

SCHEMA_PATH = Path(__file__).parents[1] / "schemas" / "release-v1.json"
# Records of dp outputs (schema_version 2); any other version is checked against v1.
SCHEMA_PATHS = {1: SCHEMA_PATH, 2: SCHEMA_PATH.with_name("release-v2.json")}


@cache
def schema_validator(version: int = 1) -> Draft202012Validator:
    """The contract schema of a version, loaded and compiled once per process."""
    schema = json.loads(SCHEMA_PATHS[version].read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def describe(err: ValidationError) -> str:
    """A schema error in words, naming schema facts but never the offending value."""
    where = key_path(err.absolute_path)
    v, expected, inst = err.validator, err.validator_value, err.instance
    if "propertyNames" in err.absolute_schema_path:
        return f"{where}: key {safe(inst)} does not match {expected}"
    if v == "required" and isinstance(inst, dict):
        missing = [p for p in expected if p not in inst]
        return f"{where}: missing {', '.join(missing)}"
    if v == "additionalProperties" and isinstance(inst, dict):
        known = set(err.schema.get("properties", {}))
        pats = [re.compile(p) for p in err.schema.get("patternProperties", {})]
        extra = [k for k in inst if k not in known and not any(p.search(k) for p in pats)]
        return f"{where}: unexpected field(s) {', '.join(safe(k) for k in extra)}"
    if v in ("oneOf", "anyOf") and err.context:
        return describe(best_match(err.context))
    if v == "type":
        return f"{where}: expected type {expected}"
    if v == "const":
        return f"{where}: expected {json.dumps(expected)}"
    if v == "enum":
        return f"{where}: expected one of {', '.join(json.dumps(e) for e in expected)}"
    if v == "pattern":
        return f"{where}: does not match {expected}"
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength"):
        return f"{where}: violates {v} {expected}"
    return f"{where}: fails {v}"


_KIND_BRANCH = {"aggregate": 0, "window_summary": 1}  # order of the schema's top-level oneOf


def contract_errors(rec: dict[str, Any]) -> list[str]:
    """Errors of the branch the record's kind selects (the oneOf error alone says nothing)."""
    version = 2 if rec.get("schema_version") == 2 else 1
    errors = list(schema_validator(version).iter_errors(rec))
    if not errors:
        return []
    kind = rec.get("kind")
    if kind not in _KIND_BRANCH:
        return ['kind: expected "aggregate" or "window_summary"']
    out: list[str] = []
    for err in errors:
        if err.validator == "oneOf" and not err.absolute_path:
            branch = _KIND_BRANCH[kind]
            out.extend(
                describe(c)
                for c in err.context or []
                if c.relative_schema_path and c.relative_schema_path[0] == branch
            )
        else:
            out.append(describe(err))
    return out or [f"does not match output contract v{version}"]
