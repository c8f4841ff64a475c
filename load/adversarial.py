"""Adversarial inputs per field: is every pattern pass linear in its input?

For each field a pipeline scans (kept text, URL, referrer, user agent, IP, and the
audit's identifier detector) this times hostile values (backtracking shapes, long
repeats, many "@", separators, "%", base64 and hex runs, format characters) against a
benign value of the same length, each at the field's input cap, and prints the cost per
kilobyte and the ratio of the worst hostile value to the benign one. Caches are cleared
before every call: caching by value is no defence (each variant would miss it).

    python -m anonstream_load.adversarial [--repeat N]

Times are the minimum of N calls (noise on a busy machine only adds), and the hostile
and benign calls are interleaved so that both see the same machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from anonstream.audit_detect import identifier_reasons
from anonstream.core import generalize
from anonstream.core.generalize import (
    IP_MAX_LEN,
    URL_INPUT_MAX,
    UserAgentGeneralizer,
    ip_prefix,
    referrer_domain,
    url_template,
)
from anonstream.core.policy import KEPT_INPUT_MAX, scrub_kept

__all__ = ["FIELDS", "Field", "Result", "main", "measure"]


def _fit(unit: str, n: int, head: str = "", tail: str = "") -> str:
    """``head`` + ``unit`` repeated + ``tail``, exactly ``n`` characters long."""
    body = n - len(head) - len(tail)
    return head + (unit * (body // len(unit) + 1))[:body] + tail


def _hostile(n: int, head: str = "", tail: str = "") -> dict[str, str]:
    """Shapes that cost a backtracking engine or a naive decoder most, n chars each."""
    f = _fit
    return {
        "a@ + [": f("a@", n, head, "[" + tail),
        "a@..a@ + [": head + "a@" * ((n - len(head) - len(tail) - 1) // 2) + "[" + tail,
        "many @": f("@", n, head, tail),
        "word then @": f("a", n, head, "@" + tail),
        "dotted then @": f("a.", n, head, "@" + tail),
        "digits _": f("1_", n, head, tail),
        "digits . ": f("12. ", n, head, tail),
        "octets -": f("255-", n, head, tail),
        "colons": f("1:", n, head, tail),
        "hex then ::1": f("deadbeef", n, head, "::1" + tail),
        "percent": f("%41", n, head, tail),
        "nested %25": f("%25", n, head, "40" + tail),
        "base64": f("QUJD", n, head, tail),
        "base64 email": f("amFuZUBleGFtcGxlLmNvbQ", n, head, tail),
        "base64 of a@ run": f("YUBhQGFA", n, head, tail),
        "hex": f("6a616e65", n, head, tail),
        "zero-width": f("a\u200b", n, head, tail),
        "combining": f("e\u0301", n, head, tail),
        "full-width": f("\uff41\uff20", n, head, tail),
        "uuid-ish": f("0123abcd-", n, head, tail),
        # Passes added for red team round 2: other joints, quotes and spaces around "@",
        # escapes, hex groups.
        "digits *": f("1*", n, head, tail),
        "digits spaced .": f("12 . ", n, head, tail),
        "quotes then @": f('"a', n, head, '"@' + tail),
        "spaced @": f("a @ ", n, head, tail),
        "entities": f("&#64;", n, head, tail),
        "backslash u": f("\\u004", n, head, tail),
        "hex groups .": f("8f3a.", n, head, "z" + tail),
    }


@dataclass(frozen=True)
class Field:
    name: str
    fn: Callable[[str], object]
    length: int  # the field's input cap: the longest value that is scanned
    benign: str
    hostile: dict[str, str]


@dataclass(frozen=True)
class Result:
    field: str
    benign_us_per_kb: float
    worst_case: str
    worst_us_per_kb: float

    @property
    def ratio(self) -> float:
        return self.worst_us_per_kb / self.benign_us_per_kb


def _clear_caches() -> None:
    for name in ("_segment", "_url_template_cached", "_host", "_referrer_host", "_ip_prefix_slow"):
        getattr(generalize, name).cache_clear()


_UA = UserAgentGeneralizer(cache_size=0)
_UA_TEXT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36 "
)


def _fields() -> tuple[Field, ...]:
    kept = KEPT_INPUT_MAX
    url = URL_INPUT_MAX
    url_head = "https://shop.example.com/"
    return (
        Field(
            "type (kept)", scrub_kept, kept,
            _fit("checkout step 3 of 4, page view 12 ", kept), _hostile(kept),
        ),
        Field(
            "url", url_template, url,
            _fit("blue-widget-42-with-a-long-descriptive-name-", url, url_head),
            _hostile(url, url_head),
        ),
        Field(
            "referrer", referrer_domain, url,
            _fit("blue+widget+reviews+", url, "https://www.example.org/search?q="),
            _hostile(url, "https://"),
        ),
        Field("user_agent", _UA, 1024, _fit(_UA_TEXT, 1024), _hostile(1024, "Mozilla/5.0 (")),
        Field(
            "ip", lambda v: ip_prefix(v), IP_MAX_LEN,
            _fit("e", IP_MAX_LEN, "fe80::1ff:fe23:4567:890a%"), _hostile(IP_MAX_LEN),
        ),
        Field(
            "audit detector", identifier_reasons, kept,
            _fit("checkout step 3 of 4, page view 12 ", kept), _hostile(kept),
        ),
    )  # fmt: skip


FIELDS: tuple[Field, ...] = _fields()


def _time_once(fn: Callable[[str], object], value: str) -> float:
    _clear_caches()
    start = time.perf_counter()
    fn(value)
    return time.perf_counter() - start


def measure(f: Field, repeat: int = 15) -> Result:
    """Min-of-``repeat`` cost per kilobyte of the benign value and of the worst hostile one."""
    best = {name: float("inf") for name in ("", *f.hostile)}
    for _ in range(repeat):
        best[""] = min(best[""], _time_once(f.fn, f.benign))
        for name, value in f.hostile.items():
            best[name] = min(best[name], _time_once(f.fn, value))
    kb = f.length / 1024
    worst = max(f.hostile, key=lambda name: best[name])
    return Result(f.name, best[""] * 1e6 / kb, worst, best[worst] * 1e6 / kb)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m anonstream_load.adversarial")
    ap.add_argument("--repeat", type=int, default=30, help="calls per value (min is kept)")
    args = ap.parse_args(argv)
    print(f"{'field':<16} {'cap':>6} {'benign us/KB':>13} {'worst us/KB':>12} {'ratio':>6}  worst")
    for f in FIELDS:
        r = measure(f, args.repeat)
        print(
            f"{f.name:<16} {f.length:>6} {r.benign_us_per_kb:>13.1f} {r.worst_us_per_kb:>12.1f} "
            f"{r.ratio:>6.1f}  {r.worst_case}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
