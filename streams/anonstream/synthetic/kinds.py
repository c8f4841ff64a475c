"""What the synthetic events are: their topics and required fields, taken from the input
contract (core/contract.py) so that the generator cannot drift from what the pipelines read;
the event types and services it draws from; and the shape of a workload."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from anonstream.core.contract import SERVICE_USAGE, WEB_ACTIVITY, Contract
from anonstream.core.decode import DEFAULT_MAX_BYTES

TOPIC_WEB: Final = WEB_ACTIVITY.topic
TOPIC_USAGE: Final = SERVICE_USAGE.topic
#: The contract each generated topic follows.
CONTRACT_OF_TOPIC: Final[dict[str, Contract]] = {
    TOPIC_WEB: WEB_ACTIVITY,
    TOPIC_USAGE: SERVICE_USAGE,
}

#: 2026-11-30T00:00:00Z in epoch milliseconds.
DEFAULT_START_MS: Final = 1_795_996_800_000

#: Size limit of one raw message (the decoder's): :func:`bad_messages` goes past it.
MAX_MESSAGE_BYTES: Final = DEFAULT_MAX_BYTES

CHUNK: Final = 4096  # events drawn per vectorised batch


def _required(contract: Contract) -> tuple[str, ...]:
    return tuple(f.name for f in contract.fields if f.required)


#: Fields every *generated* event carries: the contract's required ones (``event_id``,
#: ``ts``, ``type``) and those the generator always adds. ``customer_id`` / ``reseller_id``
#: are optional: usage events always have ``customer_id``, web events only when the visitor
#: is linked to a business account; ``reseller_id`` is absent for direct customers. A unit
#: test checks that every generated field is one its contract lists.
REQUIRED_COMMON: Final = tuple(f for f in _required(WEB_ACTIVITY) if f in _required(SERVICE_USAGE))
REQUIRED_WEB: Final = (*_required(WEB_ACTIVITY), "visitor_id", "ip", "user_agent", "url")
REQUIRED_USAGE: Final = (
    *_required(SERVICE_USAGE),
    "customer_id",
    "service",
    "user_email",
    "quantity",
    "bytes",
)

WEB_TYPES: Final = ("page_view", "email_open", "email_click", "portal_login")
WEB_TYPE_WEIGHTS: Final = (0.85, 0.06, 0.05, 0.04)

USAGE_TYPES: Final = (
    "message_scanned",
    "spam_blocked",
    "virus_blocked",
    "quarantine_release",
    "policy_change",
    "archive_search",
    "portal_login",
)
USAGE_TYPE_WEIGHTS: Final = (0.70, 0.14, 0.02, 0.04, 0.02, 0.05, 0.03)

#: Which ``service`` values are consistent with each usage ``type``.
SERVICES_FOR_TYPE: Final[dict[str, tuple[str, ...]]] = {
    "message_scanned": ("email_filtering", "encryption", "continuity"),
    "spam_blocked": ("email_filtering",),
    "virus_blocked": ("email_filtering",),
    "quarantine_release": ("email_filtering",),
    "policy_change": ("email_filtering", "archiving", "encryption", "continuity"),
    "archive_search": ("archiving",),
    "portal_login": ("portal",),
}
# Usage types performed by a person in the web portal: they always carry ip + user_agent.
PORTAL_ACTIONS: Final = frozenset(
    {"quarantine_release", "policy_change", "archive_search", "portal_login"}
)


@dataclass(frozen=True)
class Workload:
    """Shape of the synthetic population and of the event-time axis."""

    users: int = 1000
    pages: int = 200
    customers: int = 50
    zipf_s: float = 1.1
    start_ms: int = DEFAULT_START_MS
    events_per_second_of_event_time: float = 50.0
    seed: int = 7

    def __post_init__(self) -> None:
        if self.users < 1 or self.pages < 1 or self.customers < 1:
            raise ValueError("users, pages and customers must be >= 1")
        if self.zipf_s <= 0:
            raise ValueError("zipf_s must be > 0")
        if self.events_per_second_of_event_time <= 0:
            raise ValueError("events_per_second_of_event_time must be > 0")
