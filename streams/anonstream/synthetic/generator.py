"""The event generator: deterministic raw web-activity and service-usage events of the
synthetic population on one event-time axis, for the demo, `anonstream generate`, the tests
and the benchmarks."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from anonstream.synthetic.kinds import (
    CHUNK,
    PORTAL_ACTIONS,
    SERVICES_FOR_TYPE,
    TOPIC_USAGE,
    TOPIC_WEB,
    USAGE_TYPE_WEIGHTS,
    USAGE_TYPES,
    WEB_TYPE_WEIGHTS,
    WEB_TYPES,
    Workload,
)
from anonstream.synthetic.population import make_customers, make_pages, make_population
from anonstream.synthetic.sampling import Zipf, categorical, hex_strings, rfc3339, uuid_strings
from anonstream.synthetic.vocabulary import (
    EMAIL_QUERY,
    GENERIC_SEARCHES,
    INVOICE,
    ORDER,
    OTHER_REFERRERS,
    PLAIN,
    RESET,
    SEARCH_ENGINES,
    SEARCH_SUFFIXES,
    SESSION,
    SITE,
    TZ_WEIGHTS,
    USER_PATH,
)


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
        self._customers = make_customers(self._rng, workload.customers)
        self.population = make_population(self._rng, workload.users, self._customers)
        rng = self._rng
        self._user_zipf = Zipf(
            workload.users, workload.zipf_s, rng.permutation(workload.users).astype(np.int64)
        )
        self._page_paths, self._page_kinds = make_pages(rng, workload.pages)
        self._page_zipf = Zipf(len(self._page_paths), workload.zipf_s)
        self._campaigns = [
            f"cmp-{y}-{m:02d}-{c}" for y, m in ((2026, 10), (2026, 11)) for c in "abc"
        ]

    # ----------------------------------------------------------------- set-up ---------

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
        tzi = categorical(rng, TZ_WEIGHTS, m)
        return [ms[i] if as_int[i] else rfc3339(ms[i], tzi[i]) for i in range(m)]

    def _who_and_when(
        self, seqs: npt.NDArray[np.int64]
    ) -> tuple[list[int | str], list[str], list[int]]:
        """What every event has, drawn in this order: its time, its id and its user."""
        ts = self._timestamps(seqs)
        ids = uuid_strings(self._rng, len(seqs))
        users: list[int] = self._user_zipf.sample(self._rng, len(seqs)).tolist()
        return ts, ids, users

    # ------------------------------------------------------------------ web -----------

    def _web_batch(self, seqs: npt.NDArray[np.int64]) -> list[dict[str, Any]]:
        rng = self._rng
        pop = self.population
        m = len(seqs)
        ts, ids, users = self._who_and_when(seqs)
        pages = self._page_zipf.sample(rng, m).tolist()
        ref_pages = self._page_zipf.sample(rng, m).tolist()
        types = categorical(rng, WEB_TYPE_WEIGHTS, m)
        u_login, u_known, u_v6, u_ref, u_dur, u_q = (rng.random(m).tolist() for _ in range(6))
        picks = rng.integers(0, 1 << 30, m).tolist()
        durations = np.clip(rng.lognormal(math.log(15000.0), 1.4, m), 200, 600_000)
        dur = durations.astype(np.int64).tolist()
        tokens = hex_strings(rng, m, 16)
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
                if kind != PLAIN:
                    url = self._fill(url, kind, u, tokens[i], pick)
            elif t == "portal_login":
                url = SITE + "/portal/login"
            else:
                campaign = campaigns[pick % len(campaigns)]
                if t == "email_open":
                    url = f"{SITE}/e/open.gif?c={campaign}&email={pop.qemail[u]}"
                else:
                    p = pages[i]
                    target = paths[p] if kinds[p] == PLAIN else paths[0]
                    url = f"{target}?utm_source=newsletter&utm_medium=email&utm_campaign={campaign}"
            ev["url"] = url
            if t == "page_view":
                r = u_ref[i]
                if r < 0.16:
                    rp = ref_pages[i]
                    ev["referrer"] = paths[rp] if kinds[rp] == PLAIN else paths[0]
                elif r < 0.30:
                    ev["referrer"] = self._search_referrer(u, pick, u_q[i])
                elif r < 0.38:
                    ev["referrer"] = OTHER_REFERRERS[pick % len(OTHER_REFERRERS)]
            if campaign is not None:
                ev["campaign_id"] = campaign
            if t == "page_view" and u_dur[i] < 0.7:  # known once the next beacon arrives
                ev["duration_ms"] = dur[i]
            out.append(ev)
        return out

    def _fill(self, template: str, kind: int, u: int, token: str, pick: int) -> str:
        pop = self.population
        if kind == USER_PATH:
            return template.replace("{email}", pop.email[u])
        if kind == ORDER:
            return template.replace("{order}", str(4_000_000 + pick % 5_000_000))
        if kind == EMAIL_QUERY:
            return template.replace("{qemail}", pop.qemail[u])
        if kind == INVOICE:
            t = token
            return template.replace(
                "{uuid}", f"{t[:8]}-{t[8:12]}-4{t[13:16]}-a{t[17:20]}-{t[20:32]}"
            )
        if kind == SESSION:
            return template.replace("{hex}", token)
        if kind == RESET:
            return template.replace("{hex}", token).replace("{qemail}", pop.qemail[u])
        return template

    def _search_referrer(self, u: int, pick: int, r: float) -> str:
        pop = self.population
        engine = SEARCH_ENGINES[pick % len(SEARCH_ENGINES)]
        if r < 0.35:  # a person's name in the free-text query
            q = f"{pop.first[u].lower()}+{pop.last[u].lower()}"
            q += SEARCH_SUFFIXES[(pick >> 4) % len(SEARCH_SUFFIXES)]
        else:
            q = GENERIC_SEARCHES[(pick >> 4) % len(GENERIC_SEARCHES)].replace(" ", "+")
        return engine.replace("{q}", q)

    # ---------------------------------------------------------------- usage -----------

    def _usage_batch(self, seqs: npt.NDArray[np.int64]) -> list[dict[str, Any]]:
        rng = self._rng
        pop = self.population
        m = len(seqs)
        ts, ids, users = self._who_and_when(seqs)
        types = categorical(rng, USAGE_TYPE_WEIGHTS, m)
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
            portal = t in PORTAL_ACTIONS
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

    def _chunks(self, n: int) -> Iterator[npt.NDArray[np.int64]]:
        """The positions of the next ``n`` events, in batches of at most CHUNK, each taken
        only when the previous one is used (the output does not depend on how it is read)."""
        left = n
        while left > 0:
            m = min(CHUNK, left)
            left -= m
            yield self._next_seqs(m)

    def web_events(self, n: int) -> Iterator[dict[str, Any]]:
        """``n`` web-activity events (topic :data:`TOPIC_WEB`)."""
        for seqs in self._chunks(n):
            yield from self._web_batch(seqs)

    def usage_events(self, n: int) -> Iterator[dict[str, Any]]:
        """``n`` service-usage events (topic :data:`TOPIC_USAGE`)."""
        for seqs in self._chunks(n):
            yield from self._usage_batch(seqs)

    def mixed(self, n: int, web_share: float = 0.7) -> Iterator[tuple[str, dict[str, Any]]]:
        """``n`` ``(topic, event)`` pairs, about ``web_share`` of them web activity."""
        for seqs in self._chunks(n):
            is_web = self._rng.random(len(seqs)) < web_share
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
        for seqs in self._chunks(n):
            yield from map(dumps, self._web_batch(seqs))
