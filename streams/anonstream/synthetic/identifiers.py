"""The identifiers a synthetic event carries, for "nothing leaks" assertions: direct fields,
billing, and those embedded in URLs and referrers (e-mails, tokens, names in a search)."""

from __future__ import annotations

import re
from typing import Any, Final
from urllib.parse import parse_qsl, quote, unquote_plus, urlsplit

from anonstream.synthetic.vocabulary import FIRST_NAMES, LAST_NAMES

EMAIL_RE: Final = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
NAME_RE: Final = re.compile(
    r"\b(?:" + "|".join(FIRST_NAMES) + r")(?:[ +]|%20)+(?:" + "|".join(LAST_NAMES) + r")\b",
    re.IGNORECASE,
)
TOKEN_PARAMS: Final = frozenset({"session", "token", "email"})


def _add_email(ids: set[str], email: str) -> None:
    ids.add(email)
    local = email.partition("@")[0]
    if local:
        ids.add(local)


def identifiers_of(event: dict[str, Any]) -> set[str]:
    """Identifier values contained in ``event`` (for "nothing leaks" assertions).

    Covers ``visitor_id``, ``user_email`` and its local part, ``ip``, ``user_name``,
    ``phone``, ``address``, the ``billing`` card number, account number and name, plus
    identifiers embedded in ``url`` / ``referrer``: e-mail addresses and their local parts,
    session / reset tokens, and person names typed into search queries.  Values are
    returned as they appear in the event; URL-embedded ones additionally in their
    percent-/plus-decoded form (``jane.doe%40x.example.com`` and ``jane.doe@x.example.com``,
    ``jane+doe`` and ``jane doe``).  Compare case-insensitively when an output may have
    changed letter case.
    """
    ids: set[str] = set()
    for key in ("visitor_id", "ip", "user_name", "phone", "address"):
        v = event.get(key)
        if isinstance(v, str) and v:
            ids.add(v)
    email = event.get("user_email")
    if isinstance(email, str) and email:
        _add_email(ids, email)
    billing = event.get("billing")
    if isinstance(billing, dict):
        for key in ("card_number", "account_number", "name"):
            v = billing.get(key)
            if isinstance(v, str) and v:
                ids.add(v)
    for key in ("url", "referrer"):
        raw = event.get(key)
        if not isinstance(raw, str) or not raw:
            continue
        decoded = unquote_plus(raw)
        for found in EMAIL_RE.findall(decoded):
            _add_email(ids, found)
            encoded = quote(found, safe="")
            if encoded in raw:
                ids.add(encoded)
        for text in (raw, decoded):  # as typed ("jane+doe") and decoded ("jane doe")
            ids.update(m.group(0) for m in NAME_RE.finditer(text))
        for param, value in parse_qsl(urlsplit(raw).query):
            if param in TOKEN_PARAMS and value and "@" not in value:
                ids.add(value)
    return ids
