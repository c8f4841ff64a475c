"""The invented vocabulary of the synthetic population: names, companies, streets, cities,
browsers, pages, search engines and referrers. Every personal-looking value is fictitious or
from a reserved space (see the package's docstring)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Final

SITE: Final = "https://www.example.com"

FIRST_NAMES: Final = (
    "Alice", "Bruno", "Carla", "Dmitri", "Elena", "Farid", "Greta", "Hiro", "Ines", "Jonas",
    "Kira", "Lars", "Maya", "Nadia", "Omar", "Paula", "Quentin", "Rosa", "Samir", "Tara",
    "Ulrich", "Vera", "Wendell", "Xenia", "Yusuf", "Zoe", "Anton", "Bianca", "Cyril", "Daria",
    "Emil", "Freya", "Gideon", "Hanna", "Ivo", "Jana", "Kofi", "Lena", "Marek", "Nora",
)  # fmt: skip
LAST_NAMES: Final = (
    "Abernathy", "Brightwater", "Castellano", "Dunmore", "Eskildsen", "Fairbanks", "Galloway",
    "Halvorsen", "Ironside", "Jablonski", "Kettering", "Lindqvist", "Marchetti", "Northcott",
    "Okonkwo", "Pemberton", "Quackenbush", "Rasmussen", "Silverberg", "Thornbury", "Underhill",
    "Valcourt", "Whitlock", "Yarborough", "Zellweger", "Ashcombe", "Blackwood", "Crowhurst",
    "Delacroix", "Everhart", "Fitzgerald", "Grimsby", "Hollister", "Inglewood", "Juniper",
    "Kowalczyk", "Larkspur", "Montgomery", "Nightingale", "Oakenfold",
)  # fmt: skip
COMPANY_A: Final = (
    "north", "blue", "iron", "silver", "red", "green", "bright", "stone", "swift", "oak",
    "cedar", "harbor", "summit", "river", "lumen", "pioneer", "atlas", "copper",
)  # fmt: skip
COMPANY_B: Final = (
    "wind", "peak", "leaf", "gate", "field", "works", "logic", "bay", "labs", "line",
    "point", "forge", "path", "crest", "wave", "mark",
)  # fmt: skip
STREETS: Final = (
    "Maple", "Cedar Hollow", "Quartz", "Juniper", "Foxglove", "Lanternfly", "Amberleigh",
    "Willowmere", "Brackenridge", "Copperkettle", "Starling", "Mossbank", "Hawthorn Vale",
)  # fmt: skip
STREET_SUFFIXES: Final = ("Street", "Avenue", "Lane", "Road", "Court", "Way", "Drive")
CITIES: Final = (
    ("Lakemont", "WA"), ("Fairhaven Glen", "OR"), ("Brookfield Falls", "MN"),
    ("Westmarch", "CO"), ("Ashbury Crossing", "TX"), ("Port Calder", "ME"),
    ("Elmstead", "OH"), ("Ravensford", "VT"),
)  # fmt: skip
AREA_CODES: Final = ("202", "212", "303", "312", "415", "512", "617", "206")

BLOG_WORDS: Final = (
    "phishing", "spam", "quarantine", "archive", "encryption", "compliance", "gdpr",
    "retention", "policy", "outlook", "migration", "dmarc", "spf", "dkim", "continuity",
    "ransomware", "backup", "audit", "journal", "tls", "filtering", "threats", "report",
    "trends", "guide", "checklist", "release", "notes", "tips", "webinar",
)  # fmt: skip
DOC_SECTIONS: Final = ("admin", "api", "filtering", "archiving", "encryption", "portal")
DOC_TOPICS: Final = (
    "overview", "quickstart", "rules", "allow-lists", "block-lists", "retention", "search",
    "export", "keys", "certificates", "users", "groups", "sso", "audit-log", "webhooks",
    "rate-limits", "errors", "billing", "roles", "mx-records",
)  # fmt: skip

GENERIC_SEARCHES: Final = (
    "email filtering service", "spam filter for business", "email archiving pricing",
    "secure email encryption", "email continuity outage", "quarantine release spam",
    "best email security 2026", "dmarc setup guide", "archive search legal hold",
)  # fmt: skip
# Real search-engine hosts (no personal data: they only make referrer parsing realistic).
SEARCH_ENGINES: Final = (
    "https://www.google.com/search?q={q}",
    "https://www.google.com/search?q={q}&hl=en",
    "https://www.bing.com/search?q={q}&form=QBLH",
    "https://duckduckgo.com/?q={q}",
    "https://search.yahoo.com/search?p={q}",
    "https://www.ecosia.org/search?q={q}",
)
SEARCH_SUFFIXES: Final = ("", "+email", "+contact", "+login", "+linkedin")
OTHER_REFERRERS: Final = (
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
UA_TEMPLATES: Final[tuple[tuple[str, float, tuple[tuple[str, str], ...]], ...]] = (
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
TZS: Final = (
    UTC,
    timezone(timedelta(hours=1)),
    timezone(timedelta(hours=-5)),
    timezone(timedelta(hours=5, minutes=30)),
    timezone(timedelta(hours=9)),
)
TZ_WEIGHTS: Final = (0.6, 0.15, 0.12, 0.06, 0.07)
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

# Page kinds: 0 = plain page; others embed an identifier.
PLAIN, USER_PATH, ORDER, EMAIL_QUERY, INVOICE, SESSION, RESET = range(7)
HEAD_PAGES: Final[tuple[tuple[str, int], ...]] = (
    ("/", PLAIN),
    ("/pricing", PLAIN),
    ("/products/email-filtering", PLAIN),
    ("/users/{email}/settings", USER_PATH),
    ("/login", PLAIN),
    ("/products/archiving", PLAIN),
    ("/support", PLAIN),
    ("/orders/{order}", ORDER),
    ("/products/encryption", PLAIN),
    ("/account/preferences?email={qemail}&utm_source=newsletter", EMAIL_QUERY),
    ("/products/continuity", PLAIN),
    ("/invoices/{uuid}", INVOICE),
    ("/docs/getting-started", PLAIN),
    ("/checkout/review?session={hex}", SESSION),
    ("/contact", PLAIN),
    ("/about", PLAIN),
    ("/blog", PLAIN),
    ("/partners", PLAIN),
    ("/security", PLAIN),
    ("/status", PLAIN),
    ("/reset-password?token={hex}&email={qemail}", RESET),
    ("/careers", PLAIN),
    ("/legal/privacy", PLAIN),
    ("/legal/terms", PLAIN),
)
