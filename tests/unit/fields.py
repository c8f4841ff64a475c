"""Field actions of the small web_activity test pipelines: the visitor is the unit, type and
url are the dimensions, duration is a measure, and every other field is dropped."""

from __future__ import annotations

from typing import Any


def web_test_fields(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "event_id": "dedupe",
        "ts": "window",
        "customer_id": "drop",
        "reseller_id": "drop",
        "type": "keep",
        "visitor_id": "pseudonymize",
        "user_email": "drop",
        "ip": "drop",
        "user_agent": "drop",
        "url": {"generalize": "url"},
        "referrer": "drop",
        "campaign_id": "drop",
        "duration_ms": {"measure": True, "clamp": [0, 1000], "edges": [100, 500]},
    }
    fields.update(changes)
    return fields
