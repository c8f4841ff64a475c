"""The synthetic population, drawn once per workload: customers (business accounts, some
behind a reseller), people with their fake identifiers, and the site's pages (some of which
embed an identifier in the URL)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import numpy as np

from anonstream.synthetic.sampling import Zipf, card_numbers, categorical, hex_strings
from anonstream.synthetic.vocabulary import (
    AREA_CODES,
    BLOG_WORDS,
    CITIES,
    COMPANY_A,
    COMPANY_B,
    DOC_SECTIONS,
    DOC_TOPICS,
    FIRST_NAMES,
    HEAD_PAGES,
    LAST_NAMES,
    PLAIN,
    SITE,
    STREET_SUFFIXES,
    STREETS,
    UA_TEMPLATES,
)

# (customer_id, reseller_id or None, e-mail domain, account_number)
Customer = tuple[str, str | None, str, str]


@dataclass(frozen=True)
class Population:
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


def make_customers(rng: np.random.Generator, n: int) -> list[Customer]:
    """(customer_id, reseller_id or None, e-mail domain, account_number) per customer."""
    n_resellers = max(1, n // 7)
    combos = [a + b for a in COMPANY_A for b in COMPANY_B]
    picks = rng.permutation(len(combos))
    tlds = ("com", "org", "net")
    out: list[Customer] = []
    for j in range(n):
        slug = combos[int(picks[j % len(combos)])]
        if j >= len(combos):
            slug = f"{slug}{j // len(combos)}"
        domain = f"{slug}.example.{tlds[j % 3]}"
        reseller = None if rng.random() < 0.4 else f"res-{int(rng.integers(n_resellers)) + 1:03d}"
        account = f"{int(rng.integers(10**11, 10**12)):012d}"
        out.append((f"cust-{j + 1:04d}", reseller, domain, account))
    return out


def make_population(rng: np.random.Generator, n: int, customers: list[Customer]) -> Population:
    cust_zipf = Zipf(len(customers), 1.0, rng.permutation(len(customers)))
    cust_of = cust_zipf.sample(rng, n).tolist()
    firsts = rng.integers(len(FIRST_NAMES), size=n).tolist()
    lasts = rng.integers(len(LAST_NAMES), size=n).tolist()
    styles = categorical(rng, (0.5, 0.2, 0.2, 0.1), n)
    suffix_nums = rng.integers(1, 100, size=n).tolist()
    ua_cat = [
        (t.replace("{os}", os).replace("{v}", v), w / len(vs))
        for t, w, vs in UA_TEMPLATES
        for v, os in vs
    ]
    ua_idx = categorical(rng, [w for _, w in ua_cat], n)
    visitor_ids = hex_strings(rng, n, 16)
    ipv4_prefixes = ("192.0.2", "198.51.100", "203.0.113")
    v4_net = rng.integers(3, size=n).tolist()
    v4_host = rng.integers(1, 255, size=n).tolist()
    v6_groups = rng.integers(0, 1 << 16, size=6 * n).tolist()
    houses = rng.integers(1, 9999, size=n).tolist()
    streets = rng.integers(len(STREETS), size=n).tolist()
    suffixes = rng.integers(len(STREET_SUFFIXES), size=n).tolist()
    cities = rng.integers(len(CITIES), size=n).tolist()
    zips = rng.integers(10000, 99999, size=n).tolist()
    areas = rng.integers(len(AREA_CODES), size=n).tolist()
    lines = rng.integers(100, size=n).tolist()
    cards = card_numbers(rng, n)

    pop = Population()
    seen: set[str] = set()
    next_k: dict[str, int] = {}
    for i in range(n):
        first, last = FIRST_NAMES[firsts[i]], LAST_NAMES[lasts[i]]
        cid, reseller, domain, account = customers[cust_of[i]]
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
        city, state = CITIES[cities[i]]
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
        pop.phone.append(f"+1 {AREA_CODES[areas[i]]}-555-01{lines[i]:02d}")
        pop.address.append(
            f"{houses[i]} {STREETS[streets[i]]} {STREET_SUFFIXES[suffixes[i]]}, "
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


def make_pages(rng: np.random.Generator, want: int) -> tuple[list[str], list[int]]:
    paths = [p for p, _ in HEAD_PAGES[:want]]
    kinds = [k for _, k in HEAD_PAGES[:want]]
    seen = set(paths)
    kb = 1000
    while len(paths) < want:
        r = rng.random()
        words = rng.choice(len(BLOG_WORDS), size=3, replace=False).tolist()
        w = [BLOG_WORDS[x] for x in words]
        if r < 0.45:
            path = f"/blog/2026/{int(rng.integers(1, 12)):02d}/{w[0]}-{w[1]}-{w[2]}"
        elif r < 0.75:
            sec = DOC_SECTIONS[int(rng.integers(len(DOC_SECTIONS)))]
            path = f"/docs/{sec}/{DOC_TOPICS[int(rng.integers(len(DOC_TOPICS)))]}"
        else:
            kb += int(rng.integers(1, 40))
            path = f"/support/kb/{kb}-{w[0]}-{w[1]}"
        if path not in seen:
            seen.add(path)
            paths.append(path)
            kinds.append(PLAIN)
    return [SITE + p for p in paths], kinds
