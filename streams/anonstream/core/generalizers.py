"""The registry of dimension makers: each generalizer (and a kept value) is one class that
reads its options from a pipeline file, builds the function from a raw field value to its
released dimension value, and describes itself for `anonstream explain`.

pipeline.py asks `GENERALIZERS[name].parse` while it reads a file, policy.py asks
`dimension_maker(fa).function` when it builds a pipeline's policy, explain.py asks
`dimension_maker(fa).describe`: one class per rule, and no other place matches generalizer
names. The value functions themselves are in core/generalize.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from anonstream.core.actions import OTHER, Action, FieldAction
from anonstream.core.cache import KEPT_VALUES, cached
from anonstream.core.contract import FieldSpec, FieldType, Sensitivity
from anonstream.core.generalize import (
    UserAgentGeneralizer,
    band,
    ip_prefix,
    referrer_domain,
    url_template,
)
from anonstream.core.scrub import scrub_identifiers

Fail = Callable[[str, str], Exception]  # (path, reason) -> the error to raise
ValueFn = Callable[[object], str]

NONE = "(none)"  # dimension value of an absent optional field
MAX_KEPT_LEN = 80
KEPT_INPUT_MAX = 1024  # a longer kept/text value is released as TOO_LONG, unscanned
TOO_LONG = "(too long)"


def scrub_kept(value: str) -> str:
    """Scrub first, then cut: cutting first could split an email and keep its local part.
    Values over KEPT_INPUT_MAX are no event type or service name; they become TOO_LONG
    before any scan, which bounds the scrubber's (linear) cost per value."""
    if len(value) > KEPT_INPUT_MAX:
        return TOO_LONG
    return scrub_identifiers(value)[:MAX_KEPT_LEN]


def allow_list(values: tuple[str, ...]) -> ValueFn:
    """A kept field with an allow-list: its own value if listed, else OTHER (free text or
    a look-alike never becomes a dimension value)."""
    allowed = frozenset(values)
    return lambda v: (v if v in allowed else OTHER) if isinstance(v, str) else NONE


class DimensionMaker:
    """One way of turning a field into a released dimension value."""

    name: ClassVar[str]
    needs_edges: ClassVar[bool] = False  # a pipeline must give it edges

    @classmethod
    def parse(
        cls, spec: FieldSpec, params: dict[str, Any], path: str, fail: Fail
    ) -> dict[str, Any]:
        """Check the field and pop this maker's options from `params`: FieldAction keywords."""
        return {}

    @staticmethod
    def function(fa: FieldAction, ua: UserAgentGeneralizer) -> ValueFn:
        raise NotImplementedError

    @staticmethod
    def describe(fa: FieldAction) -> str:
        raise NotImplementedError


GENERALIZERS: dict[str, type[DimensionMaker]] = {}


def register(cls: type[DimensionMaker]) -> type[DimensionMaker]:
    GENERALIZERS[cls.name] = cls
    return cls


@register
class IpPrefix(DimensionMaker):
    name = "ip_prefix"

    @classmethod
    def parse(
        cls, spec: FieldSpec, params: dict[str, Any], path: str, fail: Fail
    ) -> dict[str, Any]:
        v4, v6 = params.pop("ipv4_bits", 24), params.pop("ipv6_bits", 48)
        if isinstance(v4, bool) or not (isinstance(v4, int) and 0 <= v4 <= 24):
            raise fail(f"{path}.ipv4_bits", "must be an integer from 0 to 24")
        # Past /48 a NAT64 network-specific prefix (RFC 6052: /32 to /96) keeps
        # embedded IPv4 address bits, so a released /64 can hold a whole IPv4 address.
        if isinstance(v6, bool) or not (isinstance(v6, int) and 0 <= v6 <= 48):
            raise fail(
                f"{path}.ipv6_bits",
                "must be an integer from 0 to 48 (longer prefixes can keep an IPv4"
                " address embedded by NAT64)",
            )
        return {"ipv4_bits": v4, "ipv6_bits": v6}

    @staticmethod
    def function(fa: FieldAction, ua: UserAgentGeneralizer) -> ValueFn:
        v4, v6 = fa.ipv4_bits, fa.ipv6_bits

        def ip(v: object) -> str:
            if not isinstance(v, str):
                return NONE
            return ip_prefix(v, v4, v6) or "<invalid>"

        return ip

    @staticmethod
    def describe(fa: FieldAction) -> str:
        return f"IPv4 to /{fa.ipv4_bits}, IPv6 to /{fa.ipv6_bits} network prefix"


@register
class UserAgent(DimensionMaker):
    name = "user_agent"

    @staticmethod
    def function(fa: FieldAction, ua: UserAgentGeneralizer) -> ValueFn:
        return lambda v: ua(v) if isinstance(v, str) else NONE

    @staticmethod
    def describe(fa: FieldAction) -> str:
        return "browser family + major version / OS family"


@register
class Url(DimensionMaker):
    name = "url"

    @staticmethod
    def function(fa: FieldAction, ua: UserAgentGeneralizer) -> ValueFn:
        return lambda v: url_template(v) if isinstance(v, str) and v else NONE

    @staticmethod
    def describe(fa: FieldAction) -> str:
        return "host + path template; query and fragment removed; ids in the path replaced"


@register
class ReferrerDomain(DimensionMaker):
    name = "referrer_domain"

    @staticmethod
    def function(fa: FieldAction, ua: UserAgentGeneralizer) -> ValueFn:
        return lambda v: referrer_domain(v) if isinstance(v, str) and v else NONE

    @staticmethod
    def describe(fa: FieldAction) -> str:
        return "referring domain only"


@register
class Band(DimensionMaker):
    name = "band"
    needs_edges = True  # parsed with a measure's edges, by pipeline.py

    @classmethod
    def parse(
        cls, spec: FieldSpec, params: dict[str, Any], path: str, fail: Fail
    ) -> dict[str, Any]:
        if spec.type is not FieldType.INT:
            raise fail(path, "band generalizes numeric fields only")
        return {}

    @staticmethod
    def function(fa: FieldAction, ua: UserAgentGeneralizer) -> ValueFn:
        edges = fa.edges
        return lambda v: band(float(v), edges) if isinstance(v, int | float) else NONE

    @staticmethod
    def describe(fa: FieldAction) -> str:
        return f"numeric band of {list(fa.edges)}"


@register
class Text(DimensionMaker):
    name = "text"

    @classmethod
    def parse(
        cls, spec: FieldSpec, params: dict[str, Any], path: str, fail: Fail
    ) -> dict[str, Any]:
        if spec.sensitivity is not Sensitivity.SAFE:
            raise fail(
                path,
                "free-text scrubbing is not generalization enough for a "
                f"{spec.sensitivity.value} field; use its own generalizer",
            )
        return {}

    @staticmethod
    def function(fa: FieldAction, ua: UserAgentGeneralizer) -> ValueFn:
        text = cached(scrub_kept, KEPT_VALUES)
        return lambda v: text(v) if isinstance(v, str) else NONE

    @staticmethod
    def describe(fa: FieldAction) -> str:
        return "free text scrubbed of emails, phones, cards, IPs and long numbers"


class Kept(DimensionMaker):
    """`keep`: the value itself, scrubbed, or only the values of its allow-list."""

    name = "keep"

    @staticmethod
    def function(fa: FieldAction, ua: UserAgentGeneralizer) -> ValueFn:
        if fa.values is not None:
            return allow_list(fa.values)
        keep = cached(scrub_kept, KEPT_VALUES)
        return lambda v: keep(v) if isinstance(v, str) else NONE

    @staticmethod
    def describe(fa: FieldAction) -> str:
        if fa.values is not None:
            return f"kept only as one of {list(fa.values)}; any other value is released as {OTHER}"
        return "kept as is after scrubbing emails, phones, cards, IPs and long numbers"


def dimension_maker(fa: FieldAction) -> type[DimensionMaker]:
    """The class that makes field `fa`'s dimension value (a kept or generalized field)."""
    if fa.action is Action.KEEP:
        return Kept
    if fa.action is Action.GENERALIZE and fa.generalizer in GENERALIZERS:
        return GENERALIZERS[fa.generalizer]
    raise ValueError(f"no dimension function for {fa}")  # pipeline validation prevents this
