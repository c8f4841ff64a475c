"""Synthetic raw events for anonstream (input contract v1).

Everything produced here is FAKE.  Personal-looking values only come from reserved or
fictitious spaces:

* e-mail domains are sub-domains of ``example.com`` / ``example.org`` / ``example.net``
  (RFC 2606), the web site is ``https://www.example.com``;
* IPv4 addresses are drawn from the documentation ranges 192.0.2.0/24, 198.51.100.0/24
  and 203.0.113.0/24 (RFC 5737), IPv6 addresses from 2001:db8::/32 (RFC 3849);
* phone numbers are ``555-0100`` .. ``555-0199`` (reserved for fiction in the NANP);
* card numbers are Luhn-valid 16-digit numbers from the ``4000`` test range;
* people are combinations of a small built-in list of first and last names, streets and
  cities are invented.

The module is pure: no Kafka, no clock, no global state.  Output is a deterministic
function of the :class:`Workload` (including its seed) and of the sequence of calls made
on an :class:`EventGenerator`.

Topics: web activity goes to :data:`TOPIC_WEB`, service usage to :data:`TOPIC_USAGE`.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final
from urllib.parse import parse_qsl, quote, unquote_plus, urlsplit

import numpy as np
import numpy.typing as npt
import orjson

__all__ = [
    "DEFAULT_START_MS",
    "MAX_MESSAGE_BYTES",
    "REQUIRED_COMMON",
    "REQUIRED_USAGE",
    "REQUIRED_WEB",
    "SERVICES_FOR_TYPE",
    "TOPIC_USAGE",
    "TOPIC_WEB",
    "USAGE_TYPES",
    "WEB_TYPES",
    "EventGenerator",
    "Workload",
    "bad_messages",
    "identifiers_of",
    "luhn_valid",
]

TOPIC_WEB: Final = "raw.web-activity"
TOPIC_USAGE: Final = "raw.usage"

#: 2026-11-30T00:00:00Z in epoch milliseconds.
DEFAULT_START_MS: Final = 1_795_996_800_000

#: Size limit of one raw message assumed by :func:`bad_messages` ("oversized").
MAX_MESSAGE_BYTES: Final = 64 * 1024

#: Fields every *generated* event carries.  The v1 contract itself only requires
#: ``event_id``, ``ts`` and ``type``; the generator always adds the rest listed here.
#: ``customer_id`` / ``reseller_id`` are optional: usage events always have
#: ``customer_id``, web events only when the visitor is linked to a business account;
#: ``reseller_id`` is absent for direct customers.
REQUIRED_COMMON: Final = ("event_id", "ts", "type")
REQUIRED_WEB: Final = (*REQUIRED_COMMON, "visitor_id", "ip", "user_agent", "url")
REQUIRED_USAGE: Final = (
    *REQUIRED_COMMON,
    "customer_id",
    "service",
    "user_email",
    "quantity",
    "bytes",
)

WEB_TYPES: Final = ("page_view", "email_open", "email_click", "portal_login")
_WEB_TYPE_WEIGHTS: Final = (0.85, 0.06, 0.05, 0.04)

USAGE_TYPES: Final = (
    "message_scanned",
    "spam_blocked",
    "virus_blocked",
    "quarantine_release",
    "policy_change",
    "archive_search",
    "portal_login",
)
_USAGE_TYPE_WEIGHTS: Final = (0.70, 0.14, 0.02, 0.04, 0.02, 0.05, 0.03)

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
_PORTAL_ACTIONS: Final = frozenset(
    {"quarantine_release", "policy_change", "archive_search", "portal_login"}
)

_SITE: Final = "https://www.example.com"
_CHUNK: Final = 4096

# --------------------------------------------------------------------------------------
# Vocabulary (all invented / reserved)
# --------------------------------------------------------------------------------------

_FIRST_NAMES: Final = (
    "Alice", "Bruno", "Carla", "Dmitri", "Elena", "Farid", "Greta", "Hiro", "Ines", "Jonas",
    "Kira", "Lars", "Maya", "Nadia", "Omar", "Paula", "Quentin", "Rosa", "Samir", "Tara",
    "Ulrich", "Vera", "Wendell", "Xenia", "Yusuf", "Zoe", "Anton", "Bianca", "Cyril", "Daria",
    "Emil", "Freya", "Gideon", "Hanna", "Ivo", "Jana", "Kofi", "Lena", "Marek", "Nora",
)  # fmt: skip
_LAST_NAMES: Final = (
    "Abernathy", "Brightwater", "Castellano", "Dunmore", "Eskildsen", "Fairbanks", "Galloway",
    "Halvorsen", "Ironside", "Jablonski", "Kettering", "Lindqvist", "Marchetti", "Northcott",
    "Okonkwo", "Pemberton", "Quackenbush", "Rasmussen", "Silverberg", "Thornbury", "Underhill",
    "Valcourt", "Whitlock", "Yarborough", "Zellweger", "Ashcombe", "Blackwood", "Crowhurst",
    "Delacroix", "Everhart", "Fitzgerald", "Grimsby", "Hollister", "Inglewood", "Juniper",
    "Kowalczyk", "Larkspur", "Montgomery", "Nightingale", "Oakenfold",
)  # fmt: skip
_COMPANY_A: Final = (
    "north", "blue", "iron", "silver", "red", "green", "bright", "stone", "swift", "oak",
    "cedar", "harbor", "summit", "river", "lumen", "pioneer", "atlas", "copper",
)  # fmt: skip
_COMPANY_B: Final = (
    "wind", "peak", "leaf", "gate", "field", "works", "logic", "bay", "labs", "line",
    "point", "forge", "path", "crest", "wave", "mark",
)  # fmt: skip
_STREETS: Final = (
    "Maple", "Cedar Hollow", "Quartz", "Juniper", "Foxglove", "Lanternfly", "Amberleigh",
    "Willowmere", "Brackenridge", "Copperkettle", "Starling", "Mossbank", "Hawthorn Vale",
)  # fmt: skip
_STREET_SUFFIXES: Final = ("Street", "Avenue", "Lane", "Road", "Court", "Way", "Drive")
_CITIES: Final = (
    ("Lakemont", "WA"), ("Fairhaven Glen", "OR"), ("Brookfield Falls", "MN"),
    ("Westmarch", "CO"), ("Ashbury Crossing", "TX"), ("Port Calder", "ME"),
    ("Elmstead", "OH"), ("Ravensford", "VT"),
)  # fmt: skip
_AREA_CODES: Final = ("202", "212", "303", "312", "415", "512", "617", "206")

_BLOG_WORDS: Final = (
    "phishing", "spam", "quarantine", "archive", "encryption", "compliance", "gdpr",
    "retention", "policy", "outlook", "migration", "dmarc", "spf", "dkim", "continuity",
    "ransomware", "backup", "audit", "journal", "tls", "filtering", "threats", "report",
    "trends", "guide", "checklist", "release", "notes", "tips", "webinar",
)  # fmt: skip
_DOC_SECTIONS: Final = ("admin", "api", "filtering", "archiving", "encryption", "portal")
_DOC_TOPICS: Final = (
    "overview", "quickstart", "rules", "allow-lists", "block-lists", "retention", "search",
    "export", "keys", "certificates", "users", "groups", "sso", "audit-log", "webhooks",
    "rate-limits", "errors", "billing", "roles", "mx-records",
)  # fmt: skip

_GENERIC_SEARCHES: Final = (
    "email filtering service", "spam filter for business", "email archiving pricing",
    "secure email encryption", "email continuity outage", "quarantine release spam",
    "best email security 2026", "dmarc setup guide", "archive search legal hold",
)  # fmt: skip
# Real search-engine hosts (no personal data: they only make referrer parsing realistic).
_SEARCH_ENGINES: Final = (
    "https://www.google.com/search?q={q}",
    "https://www.google.com/search?q={q}&hl=en",
    "https://www.bing.com/search?q={q}&form=QBLH",
    "https://duckduckgo.com/?q={q}",
    "https://search.yahoo.com/search?p={q}",
    "https://www.ecosia.org/search?q={q}",
)
_SEARCH_SUFFIXES: Final = ("", "+email", "+contact", "+login", "+linkedin")
_OTHER_REFERRERS: Final = (
    "https://news.example.org/2026/11/email-security-roundup",
    "https://forum.example.net/t/spam-filter-recommendations/4821",
    "https://partner.example.com/resellers/directory",
    "https://reviews.example.org/email-security/compare",
    "https://blog.example.net/posts/why-we-switched-mail-filters",
    "https://mail.example.net/",
    "https://status.example.com/",
    "https://docs.example.org/integrations/mail",
    "android-app://com.example.mail/",
    "https://t.example.net/",
)

# (template, weight, versions).  ``{v}`` is the browser version, ``{os}`` a per-template
# OS token filled from the versions tuple when it is a (version, os-version) pair.
_UA_TEMPLATES: Final[tuple[tuple[str, float, tuple[tuple[str, str], ...]], ...]] = (
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/{v}.0.0.0 Safari/537.36",
        0.36,
        (("129", ""), ("130", ""), ("131", ""), ("132", "")),
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/{v}.0.0.0 Safari/537.36",
        0.12,
        (("130", ""), ("131", ""), ("132", "")),
    ),
    (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/{v}.0.0.0 Safari/537.36",
        0.04,
        (("130", ""), ("131", "")),
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/{v}.0.0.0 Safari/537.36 Edg/{v}.0.0.0",
        0.15,
        (("130", ""), ("131", ""), ("132", "")),
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0",
        0.07,
        (("131", ""), ("132", ""), ("133", "")),
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:{v}.0) Gecko/20100101 Firefox/{v}.0",
        0.03,
        (("132", ""), ("133", "")),
    ),
    (
        "Mozilla/5.0 (X11; Linux x86_64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0",
        0.02,
        (("128", ""), ("132", ""), ("133", "")),
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/{v} Safari/605.1.15",
        0.07,
        (("17.6", ""), ("18.0", ""), ("18.1", "")),
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS {os} like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/{v} Mobile/15E148 Safari/604.1",
        0.08,
        (("17.6", "17_6_1"), ("18.0", "18_0"), ("18.1", "18_1_1")),
    ),
    (
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/{v}.0.0.0 Mobile Safari/537.36",
        0.06,
        (("129", ""), ("130", ""), ("131", "")),
    ),
)

# Time zones used by RFC 3339 timestamps ("Z" is rendered for UTC).
_TZS: Final = (
    UTC,
    timezone(timedelta(hours=1)),
    timezone(timedelta(hours=-5)),
    timezone(timedelta(hours=5, minutes=30)),
    timezone(timedelta(hours=9)),
)
_TZ_WEIGHTS: Final = (0.6, 0.15, 0.12, 0.06, 0.07)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

# Page kinds: 0 = plain page; others embed an identifier.
_PLAIN, _USER_PATH, _ORDER, _EMAIL_QUERY, _INVOICE, _SESSION, _RESET = range(7)
_HEAD_PAGES: Final[tuple[tuple[str, int], ...]] = (
    ("/", _PLAIN),
    ("/pricing", _PLAIN),
    ("/products/email-filtering", _PLAIN),
    ("/users/{email}/settings", _USER_PATH),
    ("/login", _PLAIN),
    ("/products/archiving", _PLAIN),
    ("/support", _PLAIN),
    ("/orders/{order}", _ORDER),
    ("/products/encryption", _PLAIN),
    ("/account/preferences?email={qemail}&utm_source=newsletter", _EMAIL_QUERY),
    ("/products/continuity", _PLAIN),
    ("/invoices/{uuid}", _INVOICE),
    ("/docs/getting-started", _PLAIN),
    ("/checkout/review?session={hex}", _SESSION),
    ("/contact", _PLAIN),
    ("/about", _PLAIN),
    ("/blog", _PLAIN),
    ("/partners", _PLAIN),
    ("/security", _PLAIN),
    ("/status", _PLAIN),
    ("/reset-password?token={hex}&email={qemail}", _RESET),
    ("/careers", _PLAIN),
    ("/legal/privacy", _PLAIN),
    ("/legal/terms", _PLAIN),
)

_EMAIL_RE: Final = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_NAME_RE: Final = re.compile(
    r"\b(?:" + "|".join(_FIRST_NAMES) + r")(?:[ +]|%20)+(?:" + "|".join(_LAST_NAMES) + r")\b",
    re.IGNORECASE,
)
_TOKEN_PARAMS: Final = frozenset({"session", "token", "email"})


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


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


class _Zipf:
    """Bounded Zipf sampler over ``n`` items: rank ``k`` (1-based) has weight ``k**-s``."""

    def __init__(self, n: int, s: float, order: npt.NDArray[np.int64] | None = None) -> None:
        weights = np.arange(1, n + 1, dtype=np.float64) ** -s
        self.cdf = np.cumsum(weights / weights.sum())
        self.n = n
        # rank -> item id; identity when not given.
        self.order = order if order is not None else np.arange(n, dtype=np.int64)

    def sample(self, rng: np.random.Generator, m: int) -> npt.NDArray[np.int64]:
        ranks = np.searchsorted(self.cdf, rng.random(m), side="right")
        np.minimum(ranks, self.n - 1, out=ranks)
        return self.order[ranks]


def _categorical(rng: np.random.Generator, weights: Sequence[float], m: int) -> list[int]:
    cdf = np.cumsum(np.asarray(weights, dtype=np.float64))
    cdf /= cdf[-1]
    idx = np.searchsorted(cdf, rng.random(m), side="right")
    np.minimum(idx, len(weights) - 1, out=idx)
    result: list[int] = idx.tolist()
    return result


def luhn_valid(number: str) -> bool:
    """True when ``number`` (digits only) passes the Luhn checksum."""
    if not number.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _test_card_numbers(rng: np.random.Generator, m: int) -> list[str]:
    """``m`` Luhn-valid 16-digit card numbers of the form ``4000`` + 11 digits + check."""
    digits = np.zeros((m, 15), dtype=np.int64)
    digits[:, 0] = 4
    digits[:, 4:] = rng.integers(0, 10, size=(m, 11))
    # Once the check digit is appended, every other digit counting from the right of the
    # 15-digit body (positions 14, 12, ..., 0) is doubled.
    doubled = digits[:, ::-2] * 2
    doubled -= 9 * (doubled > 9)
    total = doubled.sum(axis=1) + digits[:, -2::-2].sum(axis=1)
    check = (-total) % 10
    body = ["".join(map(str, row)) for row in digits.tolist()]
    return [b + str(c) for b, c in zip(body, check.tolist(), strict=True)]


def _uuid_strings(rng: np.random.Generator, m: int) -> list[str]:
    """``m`` RFC 4122 version-4 UUID strings drawn from ``rng``."""
    raw = rng.integers(0, 256, size=(m, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    h = raw.tobytes().hex()
    out = []
    for i in range(0, 32 * m, 32):
        out.append(
            f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-{h[i + 12 : i + 16]}-"
            f"{h[i + 16 : i + 20]}-{h[i + 20 : i + 32]}"
        )
    return out


def _hex_strings(rng: np.random.Generator, m: int, nbytes: int) -> list[str]:
    h = rng.integers(0, 256, size=m * nbytes, dtype=np.uint8).tobytes().hex()
    w = 2 * nbytes
    return [h[i : i + w] for i in range(0, len(h), w)]


def _rfc3339(ms: int, tz_index: int) -> str:
    dt = _EPOCH + timedelta(milliseconds=ms)
    if tz_index == 0:
        return dt.isoformat(timespec="milliseconds")[:-6] + "Z"
    return dt.astimezone(_TZS[tz_index]).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class _Population:
    """Per-user attributes as parallel lists (indexing lists is faster than numpy scalars)."""

    visitor_id: list[str] = field(default_factory=list)
    email: list[str] = field(default_factory=list)
    qemail: list[str] = field(default_factory=list)
    first: list[str] = field(default_factory=list)
    last: list[str] = field(default_factory=list)
    name: list[str] = field(default_factory=list)
    phone: list[str] = field(default_factory=list)
    address: list[str] = field(default_factory=list)
    ipv4: list[str] = field(default_factory=list)
    ipv6: list[str] = field(default_factory=list)
    user_agent: list[str] = field(default_factory=list)
    customer_id: list[str] = field(default_factory=list)
    reseller_id: list[str | None] = field(default_factory=list)
    card_number: list[str] = field(default_factory=list)
    account_number: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------------------


class EventGenerator:
    """Deterministic generator of raw web-activity and service-usage events.

    All kinds of events share one event-time axis: the ``i``-th event produced by the
    generator (whatever its kind) is stamped around ``start_ms + i * 1000 / rate`` ms
    (``rate`` = ``events_per_second_of_event_time``).  90% of events get a jitter of at
    most half a slot, 10% a jitter of up to +-2 s, so the stream is mostly but not strictly
    in order and no event is more than 2 s away from its nominal time (never before
    ``start_ms``).
    """

    def __init__(self, workload: Workload) -> None:
        self.workload = workload
        self._rng = np.random.default_rng(workload.seed)
        self._seq = 0
        self._spacing_ms = 1000.0 / workload.events_per_second_of_event_time
        self._customers = self._make_customers()
        self.population = self._make_population()
        rng = self._rng
        self._user_zipf = _Zipf(
            workload.users, workload.zipf_s, rng.permutation(workload.users).astype(np.int64)
        )
        self._page_paths, self._page_kinds = self._make_pages()
        self._page_zipf = _Zipf(len(self._page_paths), workload.zipf_s)
        self._campaigns = [
            f"cmp-{y}-{m:02d}-{c}" for y, m in ((2026, 10), (2026, 11)) for c in "abc"
        ]

    # ----------------------------------------------------------------- set-up ---------

    def _make_customers(self) -> list[tuple[str, str | None, str, str]]:
        """(customer_id, reseller_id or None, e-mail domain, account_number) per customer."""
        rng = self._rng
        n = self.workload.customers
        n_resellers = max(1, n // 7)
        combos = [a + b for a in _COMPANY_A for b in _COMPANY_B]
        picks = rng.permutation(len(combos))
        tlds = ("com", "org", "net")
        out: list[tuple[str, str | None, str, str]] = []
        for j in range(n):
            slug = combos[int(picks[j % len(combos)])]
            if j >= len(combos):
                slug = f"{slug}{j // len(combos)}"
            domain = f"{slug}.example.{tlds[j % 3]}"
            reseller = (
                None if rng.random() < 0.4 else f"res-{int(rng.integers(n_resellers)) + 1:03d}"
            )
            account = f"{int(rng.integers(10**11, 10**12)):012d}"
            out.append((f"cust-{j + 1:04d}", reseller, domain, account))
        return out

    def _make_population(self) -> _Population:
        rng = self._rng
        n = self.workload.users
        cust_zipf = _Zipf(len(self._customers), 1.0, rng.permutation(len(self._customers)))
        cust_of = cust_zipf.sample(rng, n).tolist()
        firsts = rng.integers(len(_FIRST_NAMES), size=n).tolist()
        lasts = rng.integers(len(_LAST_NAMES), size=n).tolist()
        styles = _categorical(rng, (0.5, 0.2, 0.2, 0.1), n)
        suffix_nums = rng.integers(1, 100, size=n).tolist()
        ua_cat = [
            (t.replace("{os}", os).replace("{v}", v), w / len(vs))
            for t, w, vs in _UA_TEMPLATES
            for v, os in vs
        ]
        ua_idx = _categorical(rng, [w for _, w in ua_cat], n)
        visitor_ids = _hex_strings(rng, n, 16)
        ipv4_prefixes = ("192.0.2", "198.51.100", "203.0.113")
        v4_net = rng.integers(3, size=n).tolist()
        v4_host = rng.integers(1, 255, size=n).tolist()
        v6_groups = rng.integers(0, 1 << 16, size=6 * n).tolist()
        houses = rng.integers(1, 9999, size=n).tolist()
        streets = rng.integers(len(_STREETS), size=n).tolist()
        suffixes = rng.integers(len(_STREET_SUFFIXES), size=n).tolist()
        cities = rng.integers(len(_CITIES), size=n).tolist()
        zips = rng.integers(10000, 99999, size=n).tolist()
        areas = rng.integers(len(_AREA_CODES), size=n).tolist()
        lines = rng.integers(100, size=n).tolist()
        cards = _test_card_numbers(rng, n)

        pop = _Population()
        seen: set[str] = set()
        next_k: dict[str, int] = {}
        for i in range(n):
            first, last = _FIRST_NAMES[firsts[i]], _LAST_NAMES[lasts[i]]
            cid, reseller, domain, account = self._customers[cust_of[i]]
            f, la = first.lower(), last.lower()
            styles_i = (f"{f}.{la}", f"{f[0]}.{la}", f"{f}.{la}{suffix_nums[i]}", f"{f}_{la}")
            local = styles_i[styles[i]]
            email = f"{local}@{domain}"
            if email in seen:  # deterministic de-duplication: first.last<k>@domain, k >= 100
                base = f"{f}.{la}@{domain}"
                k = next_k.get(base, 100)
                while f"{f}.{la}{k}@{domain}" in seen:
                    k += 1
                next_k[base] = k + 1
                email = f"{f}.{la}{k}@{domain}"
            seen.add(email)
            city, state = _CITIES[cities[i]]
            g = v6_groups[6 * i : 6 * i + 6]
            v6 = f"2001:db8:{g[0]:x}:{g[1]:x}:{g[2]:x}:{g[3]:x}:{g[4]:x}:{g[5]:x}"
            if ":0:0:" in v6 or v6.endswith(":0:0"):  # canonical (RFC 5952) form
                v6 = str(ipaddress.IPv6Address(v6))
            pop.visitor_id.append(visitor_ids[i])
            pop.email.append(email)
            pop.qemail.append(email.replace("@", "%40"))  # == quote(email, safe="") here
            pop.first.append(first)
            pop.last.append(last)
            pop.name.append(f"{first} {last}")
            pop.phone.append(f"+1 {_AREA_CODES[areas[i]]}-555-01{lines[i]:02d}")
            pop.address.append(
                f"{houses[i]} {_STREETS[streets[i]]} {_STREET_SUFFIXES[suffixes[i]]}, "
                f"{city}, {state} {zips[i]}"
            )
            pop.ipv4.append(f"{ipv4_prefixes[v4_net[i]]}.{v4_host[i]}")
            pop.ipv6.append(v6)
            pop.user_agent.append(ua_cat[ua_idx[i]][0])
            pop.customer_id.append(cid)
            pop.reseller_id.append(reseller)
            pop.card_number.append(cards[i])
            pop.account_number.append(account)
        return pop

    def _make_pages(self) -> tuple[list[str], list[int]]:
        rng = self._rng
        want = self.workload.pages
        paths = [p for p, _ in _HEAD_PAGES[:want]]
        kinds = [k for _, k in _HEAD_PAGES[:want]]
        seen = set(paths)
        kb = 1000
        while len(paths) < want:
            r = rng.random()
            words = rng.choice(len(_BLOG_WORDS), size=3, replace=False).tolist()
            w = [_BLOG_WORDS[x] for x in words]
            if r < 0.45:
                path = f"/blog/2026/{int(rng.integers(1, 12)):02d}/{w[0]}-{w[1]}-{w[2]}"
            elif r < 0.75:
                sec = _DOC_SECTIONS[int(rng.integers(len(_DOC_SECTIONS)))]
                path = f"/docs/{sec}/{_DOC_TOPICS[int(rng.integers(len(_DOC_TOPICS)))]}"
            else:
                kb += int(rng.integers(1, 40))
                path = f"/support/kb/{kb}-{w[0]}-{w[1]}"
            if path not in seen:
                seen.add(path)
                paths.append(path)
                kinds.append(_PLAIN)
        return [_SITE + p for p in paths], kinds

    # ------------------------------------------------------------- common bits ---------

    def _next_seqs(self, m: int) -> npt.NDArray[np.int64]:
        seqs = np.arange(self._seq, self._seq + m, dtype=np.int64)
        self._seq += m
        return seqs

    def _timestamps(self, seqs: npt.NDArray[np.int64]) -> list[int | str]:
        """Event times for the given positions: ~half epoch ms ints, half RFC 3339."""
        rng = self._rng
        m = len(seqs)
        base = self.workload.start_ms + seqs * self._spacing_ms
        # Mostly in order: 90% of events sit within half a slot of their nominal time, the
        # other 10% (late or early clocks) anywhere within +-2 s of it.
        half_slot = min(self._spacing_ms / 2, 2000.0)
        jitter = rng.uniform(-half_slot, half_slot, m)
        skewed = rng.random(m) < 0.1
        jitter[skewed] = rng.uniform(-2000.0, 2000.0, int(skewed.sum()))
        ms = np.maximum(np.rint(base + jitter), self.workload.start_ms).astype(np.int64).tolist()
        as_int = (rng.random(m) < 0.5).tolist()
        tzi = _categorical(rng, _TZ_WEIGHTS, m)
        return [ms[i] if as_int[i] else _rfc3339(ms[i], tzi[i]) for i in range(m)]

    # ------------------------------------------------------------------ web -----------

    def _web_batch(self, seqs: npt.NDArray[np.int64]) -> list[dict[str, Any]]:
        rng = self._rng
        pop = self.population
        m = len(seqs)
        ts = self._timestamps(seqs)
        ids = _uuid_strings(rng, m)
        users = self._user_zipf.sample(rng, m).tolist()
        pages = self._page_zipf.sample(rng, m).tolist()
        ref_pages = self._page_zipf.sample(rng, m).tolist()
        types = _categorical(rng, _WEB_TYPE_WEIGHTS, m)
        u_login, u_known, u_v6, u_ref, u_dur, u_q = (rng.random(m).tolist() for _ in range(6))
        picks = rng.integers(0, 1 << 30, m).tolist()
        durations = np.clip(rng.lognormal(math.log(15000.0), 1.4, m), 200, 600_000)
        dur = durations.astype(np.int64).tolist()
        tokens = _hex_strings(rng, m, 16)
        kinds = self._page_kinds
        paths = self._page_paths
        campaigns = self._campaigns
        out: list[dict[str, Any]] = []
        for i in range(m):
            u = users[i]
            t = WEB_TYPES[types[i]]
            pick = picks[i]
            ev: dict[str, Any] = {"event_id": ids[i], "ts": ts[i], "type": t}
            logged_in = t == "portal_login" or u_login[i] < 0.4
            # The business account is known for logged-in visitors, e-mail recipients and
            # visitors whose cookie was linked to an account earlier; anonymous otherwise.
            if logged_in or t != "page_view" or u_known[i] < 0.2:
                ev["customer_id"] = pop.customer_id[u]
                reseller = pop.reseller_id[u]
                if reseller is not None:
                    ev["reseller_id"] = reseller
            ev["visitor_id"] = pop.visitor_id[u]
            if logged_in:
                ev["user_email"] = pop.email[u]
            ev["ip"] = pop.ipv6[u] if u_v6[i] < 0.15 else pop.ipv4[u]
            ev["user_agent"] = pop.user_agent[u]
            campaign = None
            if t == "page_view":
                p = pages[i]
                kind = kinds[p]
                url = paths[p]
                if kind != _PLAIN:
                    url = self._fill(url, kind, u, tokens[i], pick)
            elif t == "portal_login":
                url = _SITE + "/portal/login"
            else:
                campaign = campaigns[pick % len(campaigns)]
                if t == "email_open":
                    url = f"{_SITE}/e/open.gif?c={campaign}&email={pop.qemail[u]}"
                else:
                    p = pages[i]
                    target = paths[p] if kinds[p] == _PLAIN else paths[0]
                    url = f"{target}?utm_source=newsletter&utm_medium=email&utm_campaign={campaign}"
            ev["url"] = url
            if t == "page_view":
                r = u_ref[i]
                if r < 0.16:
                    rp = ref_pages[i]
                    ev["referrer"] = paths[rp] if kinds[rp] == _PLAIN else paths[0]
                elif r < 0.30:
                    ev["referrer"] = self._search_referrer(u, pick, u_q[i])
                elif r < 0.38:
                    ev["referrer"] = _OTHER_REFERRERS[pick % len(_OTHER_REFERRERS)]
            if campaign is not None:
                ev["campaign_id"] = campaign
            if t == "page_view" and u_dur[i] < 0.7:  # known once the next beacon arrives
                ev["duration_ms"] = dur[i]
            out.append(ev)
        return out

    def _fill(self, template: str, kind: int, u: int, token: str, pick: int) -> str:
        pop = self.population
        if kind == _USER_PATH:
            return template.replace("{email}", pop.email[u])
        if kind == _ORDER:
            return template.replace("{order}", str(4_000_000 + pick % 5_000_000))
        if kind == _EMAIL_QUERY:
            return template.replace("{qemail}", pop.qemail[u])
        if kind == _INVOICE:
            t = token
            return template.replace(
                "{uuid}", f"{t[:8]}-{t[8:12]}-4{t[13:16]}-a{t[17:20]}-{t[20:32]}"
            )
        if kind == _SESSION:
            return template.replace("{hex}", token)
        if kind == _RESET:
            return template.replace("{hex}", token).replace("{qemail}", pop.qemail[u])
        return template

    def _search_referrer(self, u: int, pick: int, r: float) -> str:
        pop = self.population
        engine = _SEARCH_ENGINES[pick % len(_SEARCH_ENGINES)]
        if r < 0.35:  # a person's name in the free-text query
            q = f"{pop.first[u].lower()}+{pop.last[u].lower()}"
            q += _SEARCH_SUFFIXES[(pick >> 4) % len(_SEARCH_SUFFIXES)]
        else:
            q = _GENERIC_SEARCHES[(pick >> 4) % len(_GENERIC_SEARCHES)].replace(" ", "+")
        return engine.replace("{q}", q)

    # ---------------------------------------------------------------- usage -----------

    def _usage_batch(self, seqs: npt.NDArray[np.int64]) -> list[dict[str, Any]]:
        rng = self._rng
        pop = self.population
        m = len(seqs)
        ts = self._timestamps(seqs)
        ids = _uuid_strings(rng, m)
        users = self._user_zipf.sample(rng, m).tolist()
        types = _categorical(rng, _USAGE_TYPE_WEIGHTS, m)
        u_name, u_phone, u_addr, u_ip, u_bill, u_v6, u_svc = (
            rng.random(m).tolist() for _ in range(7)
        )
        geo = rng.geometric(0.25, m).tolist()
        hits = np.minimum(rng.lognormal(2.5, 1.5, m), 5000).astype(np.int64).tolist()
        size = np.clip(rng.lognormal(math.log(40_000.0), 1.4, m), 300, 50_000_000)
        sizes = size.astype(np.int64).tolist()
        out: list[dict[str, Any]] = []
        for i in range(m):
            u = users[i]
            t = USAGE_TYPES[types[i]]
            services = SERVICES_FOR_TYPE[t]
            if t == "message_scanned":
                r = u_svc[i]
                service = services[0] if r < 0.8 else services[1] if r < 0.9 else services[2]
            else:
                service = services[int(u_svc[i] * len(services))]
            if t == "message_scanned":
                qty, nbytes = geo[i], geo[i] * sizes[i]
            elif t == "spam_blocked":
                qty = max(1, geo[i] // 2)
                nbytes = qty * sizes[i] // 4
            elif t == "virus_blocked":
                qty, nbytes = 1, sizes[i]
            elif t == "quarantine_release":
                qty = 1 + geo[i] // 4
                nbytes = qty * sizes[i]
            elif t == "archive_search":
                qty, nbytes = hits[i], hits[i] * 2048
            elif t == "policy_change":
                qty, nbytes = 1, 200 + sizes[i] % 1800
            else:  # portal_login
                qty, nbytes = 1, 0
            ev: dict[str, Any] = {
                "event_id": ids[i],
                "ts": ts[i],
                "type": t,
                "service": service,
                "customer_id": pop.customer_id[u],
            }
            reseller = pop.reseller_id[u]
            if reseller is not None:
                ev["reseller_id"] = reseller
            ev["user_email"] = pop.email[u]
            if u_name[i] < 0.6:
                ev["user_name"] = pop.name[u]
            if u_phone[i] < 0.2:
                ev["phone"] = pop.phone[u]
            if u_addr[i] < 0.1:
                ev["address"] = pop.address[u]
            portal = t in _PORTAL_ACTIONS
            if portal or u_ip[i] < 0.3:
                ev["ip"] = pop.ipv6[u] if u_v6[i] < 0.15 else pop.ipv4[u]
            if portal:
                ev["user_agent"] = pop.user_agent[u]
            ev["quantity"] = qty
            ev["bytes"] = nbytes
            if u_bill[i] < 0.03:
                ev["billing"] = {
                    "card_number": pop.card_number[u],
                    "account_number": pop.account_number[u],
                    "name": pop.name[u],
                }
            out.append(ev)
        return out

    # ------------------------------------------------------------------ API -----------

    def web_events(self, n: int) -> Iterator[dict[str, Any]]:
        """``n`` web-activity events (topic :data:`TOPIC_WEB`)."""
        left = n
        while left > 0:
            m = min(_CHUNK, left)
            left -= m
            yield from self._web_batch(self._next_seqs(m))

    def usage_events(self, n: int) -> Iterator[dict[str, Any]]:
        """``n`` service-usage events (topic :data:`TOPIC_USAGE`)."""
        left = n
        while left > 0:
            m = min(_CHUNK, left)
            left -= m
            yield from self._usage_batch(self._next_seqs(m))

    def mixed(self, n: int, web_share: float = 0.7) -> Iterator[tuple[str, dict[str, Any]]]:
        """``n`` ``(topic, event)`` pairs, about ``web_share`` of them web activity."""
        left = n
        while left > 0:
            m = min(_CHUNK, left)
            left -= m
            seqs = self._next_seqs(m)
            is_web = self._rng.random(m) < web_share
            web = iter(self._web_batch(seqs[is_web]))
            usage = iter(self._usage_batch(seqs[~is_web]))
            for w in is_web.tolist():
                if w:
                    yield TOPIC_WEB, next(web)
                else:
                    yield TOPIC_USAGE, next(usage)

    def encoded_web_events(self, n: int) -> Iterator[bytes]:
        """``n`` web-activity events as compact JSON bytes (orjson)."""
        dumps = orjson.dumps
        left = n
        while left > 0:
            m = min(_CHUNK, left)
            left -= m
            yield from map(dumps, self._web_batch(self._next_seqs(m)))


# --------------------------------------------------------------------------------------
# Identifiers (for leak tests)
# --------------------------------------------------------------------------------------


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
        for found in _EMAIL_RE.findall(decoded):
            _add_email(ids, found)
            encoded = quote(found, safe="")
            if encoded in raw:
                ids.add(encoded)
        for text in (raw, decoded):  # as typed ("jane+doe") and decoded ("jane doe")
            ids.update(m.group(0) for m in _NAME_RE.finditer(text))
        for param, value in parse_qsl(urlsplit(raw).query):
            if param in _TOKEN_PARAMS and value and "@" not in value:
                ids.add(value)
    return ids


# --------------------------------------------------------------------------------------
# Malformed input
# --------------------------------------------------------------------------------------

_BASE_WEB: Final[dict[str, Any]] = {
    "event_id": "0b7f4a3e-5c1d-4e8a-9f2b-6d3c8e1a2b4c",
    "ts": "2026-11-30T12:00:01.123Z",
    "type": "page_view",
    "customer_id": "cust-0042",
    "reseller_id": "res-007",
    "visitor_id": "5f0c3a9e7b2d4c1f8a6e0b9d3c7f2a1e",
    "ip": "198.51.100.23",
    "user_agent": _UA_TEMPLATES[0][0].replace("{v}", "131"),
    "url": _SITE + "/pricing",
    "duration_ms": 5400,
}
_BASE_USAGE: Final[dict[str, Any]] = {
    "event_id": "7c2e9d41-0a3b-4f6c-8e5d-1b9a7c3f2e60",
    "ts": 1_796_040_001_123,
    "type": "message_scanned",
    "service": "email_filtering",
    "customer_id": "cust-0042",
    "user_email": "alice.abernathy@northwind.example.com",
    "quantity": 3,
    "bytes": 120_400,
}


def _with(base: dict[str, Any], **changes: Any) -> bytes:
    return orjson.dumps({**base, **changes})


def bad_messages(topic: str = TOPIC_USAGE) -> list[tuple[str, bytes]]:
    """``(expected_reason, payload)`` pairs of malformed raw messages for ``topic``.

    Each payload is otherwise a valid event of ``topic`` (:data:`TOPIC_USAGE` by default,
    or :data:`TOPIC_WEB`), so exactly one rule is broken and decoding it against that
    topic's contract should yield the reason.  Reasons: not_json, not_object,
    missing_field (event_id, ts), wrong_type (ts as a list; a negative or string
    ``quantity`` for usage, ``duration_ms`` for web), bad_timestamp (year 1, year 2100),
    future_timestamp (year 2099), oversized (> :data:`MAX_MESSAGE_BYTES`), not_utf8,
    too_deep (junk nested 200 levels).
    """
    if topic not in (TOPIC_WEB, TOPIC_USAGE):
        raise ValueError(f"unknown topic {topic!r}")
    is_web = topic == TOPIC_WEB
    base = _BASE_WEB if is_web else _BASE_USAGE
    counter = "duration_ms" if is_web else "quantity"
    good = orjson.dumps(base)
    pad = "x" * (MAX_MESSAGE_BYTES + 1024)
    deep = "[" * 200 + "]" * 200
    not_utf8 = good.replace(b'"customer_id":"cust-0042"', b'"customer_id":"cust-\xff\xfe42"')
    assert not_utf8 != good
    return [
        ("not_json", b"this is not json"),
        ("not_json", good[: len(good) // 2]),
        ("not_object", b'[{"event_id": "a"}, 2, 3]'),
        ("missing_field", orjson.dumps({k: v for k, v in base.items() if k != "event_id"})),
        ("missing_field", orjson.dumps({k: v for k, v in base.items() if k != "ts"})),
        ("wrong_type", _with(base, ts=["2026-11-30T12:00:01Z"])),
        ("wrong_type", _with(base, **{counter: -5})),
        ("wrong_type", _with(base, **{counter: "7"})),
        ("bad_timestamp", _with(base, ts="2026-13-45T99:61:00Z")),
        ("bad_timestamp", _with(base, ts="last tuesday")),
        ("bad_timestamp", _with(base, ts="0001-01-01T00:00:00+01:00")),  # year 0 in UTC
        ("bad_timestamp", _with(base, ts="2100-01-01T00:00:00Z")),  # past the range
        ("bad_timestamp", _with(base, ts=4_102_444_800_000)),
        ("future_timestamp", _with(base, ts="2099-01-01T00:00:00Z")),
        ("future_timestamp", _with(base, ts=4_070_908_800_000)),  # 2099-01-01
        ("oversized", _with(base, user_agent="Mozilla/5.0 " + pad)),
        ("not_utf8", not_utf8),
        ("too_deep", good[:-1] + b',"junk":' + deep.encode() + b"}"),
    ]
