"""Input contract, version 1: the fields each raw event kind may carry.

The contract is the allow-list of the policy step. Every field is classed by how much it
says about a person; the pipeline loader uses the class to refuse actions that would leak
(keeping an email, using a pseudonym as a dimension, ...). Anything not listed here is
unknown: it is dropped and counted, never passed on.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

CONTRACT_VERSION = 1


class Sensitivity(StrEnum):
    """How much a field says about a person; decides which actions a pipeline may take."""

    META = "meta"  # event_id, ts: structural, used for dedupe and windowing only
    IDENTIFIER = "identifier"  # direct identifiers: drop or pseudonymize only
    QUASI = "quasi"  # quasi-identifiers: drop or generalize
    ACCOUNT = "account"  # business account ids: drop, keep (k still applies) or pseudonymize
    SAFE = "safe"  # descriptive values: keep, generalize (bands) or measure


class FieldType(StrEnum):
    STRING = "string"
    INT = "int"  # non-negative integer
    TIMESTAMP = "timestamp"  # RFC 3339 with offset, or integer epoch milliseconds
    OBJECT = "object"  # nested object with its own listed sub-fields


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    type: FieldType
    sensitivity: Sensitivity
    required: bool = False
    children: tuple[FieldSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class Contract:
    name: str
    topic: str
    fields: tuple[FieldSpec, ...]

    def field(self, name: str) -> FieldSpec | None:
        for f in self.fields:
            if f.name == name:
                return f
        return None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)


S, N, T, OBJ = FieldType.STRING, FieldType.INT, FieldType.TIMESTAMP, FieldType.OBJECT
_COMMON = (
    FieldSpec("event_id", S, Sensitivity.META, required=True),
    FieldSpec("ts", T, Sensitivity.META, required=True),
    FieldSpec("customer_id", S, Sensitivity.ACCOUNT),
    FieldSpec("reseller_id", S, Sensitivity.ACCOUNT),
)

WEB_ACTIVITY = Contract(
    name="web_activity",
    topic="raw.web-activity",
    fields=(
        *_COMMON,
        FieldSpec("type", S, Sensitivity.SAFE, required=True),
        FieldSpec("visitor_id", S, Sensitivity.IDENTIFIER),
        FieldSpec("user_email", S, Sensitivity.IDENTIFIER),
        FieldSpec("ip", S, Sensitivity.QUASI),
        FieldSpec("user_agent", S, Sensitivity.QUASI),
        FieldSpec("url", S, Sensitivity.QUASI),
        FieldSpec("referrer", S, Sensitivity.QUASI),
        FieldSpec("campaign_id", S, Sensitivity.SAFE),
        FieldSpec("duration_ms", N, Sensitivity.SAFE),
    ),
)

SERVICE_USAGE = Contract(
    name="service_usage",
    topic="raw.usage",
    fields=(
        *_COMMON,
        FieldSpec("type", S, Sensitivity.SAFE, required=True),
        FieldSpec("service", S, Sensitivity.SAFE),
        FieldSpec("user_email", S, Sensitivity.IDENTIFIER),
        FieldSpec("user_name", S, Sensitivity.IDENTIFIER),
        FieldSpec("phone", S, Sensitivity.IDENTIFIER),
        FieldSpec("address", S, Sensitivity.IDENTIFIER),
        FieldSpec("ip", S, Sensitivity.QUASI),
        FieldSpec("user_agent", S, Sensitivity.QUASI),
        FieldSpec("quantity", N, Sensitivity.SAFE),
        FieldSpec("bytes", N, Sensitivity.SAFE),
        FieldSpec(
            "billing",
            OBJ,
            Sensitivity.IDENTIFIER,
            children=(
                FieldSpec("card_number", S, Sensitivity.IDENTIFIER),
                FieldSpec("account_number", S, Sensitivity.IDENTIFIER),
                FieldSpec("name", S, Sensitivity.IDENTIFIER),
            ),
        ),
    ),
)

CONTRACTS: dict[str, Contract] = {c.name: c for c in (WEB_ACTIVITY, SERVICE_USAGE)}
