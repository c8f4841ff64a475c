"""Generalization of quasi-identifiers: IP prefixes, user-agent families, URL templates,
referrer domains and numeric bands.

Each function maps a raw, high-cardinality value onto a coarse category so that the
k-anonymous aggregation downstream has groups large enough to release. The outputs never
carry identifiers from the input: anything that looks like one becomes a placeholder.
All functions are pure and safe on arbitrary input (they return a sentinel rather than
raise); the string-parsing ones keep bounded caches because their inputs repeat heavily.

This module gathers them; each domain has its own: ipprefix.py, useragent.py, urls.py,
bands.py (the values put in place of what is not released: markers.py). Which generalizer
a pipeline may name, with its options and its explain text, is core/generalizers.py.
"""

from __future__ import annotations

from anonstream.core.bands import Bands, band, band_index
from anonstream.core.ipprefix import IP_MAX_LEN, _ip_prefix_slow, ip_prefix
from anonstream.core.markers import INVALID, IP_HOST, NAN_BAND, NONE, OTHER
from anonstream.core.urls import (
    URL_INPUT_MAX,
    URL_MAX_DEPTH,
    URL_MAX_LEN,
    _host,
    _referrer_host,
    _segment,
    _segment_full,
    _url_template_cached,
    referrer_domain,
    url_template,
)
from anonstream.core.useragent import UserAgentGeneralizer

__all__ = [
    "INVALID",
    "IP_HOST",
    "IP_MAX_LEN",
    "NAN_BAND",
    "NONE",
    "OTHER",
    "URL_INPUT_MAX",
    "URL_MAX_DEPTH",
    "URL_MAX_LEN",
    "Bands",
    "UserAgentGeneralizer",
    "_host",
    "_ip_prefix_slow",
    "_referrer_host",
    "_segment",
    "_segment_full",
    "_url_template_cached",
    "band",
    "band_index",
    "ip_prefix",
    "referrer_domain",
    "url_template",
]
