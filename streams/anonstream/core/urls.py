"""Generalization of URLs to host + path templates, and of referrers to their domain.

Anything in a path that reads like an identifier (ids, tokens, emails, IPs, hex runs)
becomes a placeholder; query and fragment are cut before anything else.

Why this module is long: a URL has three places an identifier hides (host labels, path
segments, and spans across segments or backslashes), each judged here against the same
scrubber; apart, the rules for one URL would be read in several files.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from itertools import pairwise
from urllib.parse import quote, unquote_plus

from anonstream.core.cache import URL_HOSTS, URL_PATHS, URL_SEGMENTS
from anonstream.core.ipprefix import ip_prefix
from anonstream.core.markers import INVALID, IP_HOST, NONE
from anonstream.core.scrub import (
    EMAIL,
    ID,
    IP,
    Span,
    detection_view,
    identifier_kinds,
    identifier_spans,
    scrub_text,
    split_id_spans,
)

URL_MAX_LEN = 200
URL_INPUT_MAX = 8192  # longer url/referrer values are "<invalid>" before any parsing
URL_MAX_DEPTH = 8
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]{0,31}:")
_OPAQUE_SCHEME_RE = re.compile(r"[a-z][a-z+.\-]{0,19}:")
# Hosts that browsers (WHATWG URL parsing) treat as IPv4: dotted, decimal, hex, octal.
_IPV4_HOST_RE = re.compile(r"(?:(?:0x[0-9a-f]*|[0-9]+)\.){0,3}(?:0x[0-9a-f]*|[0-9]+)")
_HOST_RE = re.compile(r"[\w\-]+(?:\.[\w\-]+)*")
# Referrer headers are absolute, but logs also hold scheme-less "example.com/path".
# The second form is one possessive run (a dot inside it is checked in Python): "a.b.c"
# split at each dot by the regex engine would cost O(n**2) on a long dotted run.
_REF_AUTHORITY_RE = re.compile(
    r"(?:[A-Za-z][A-Za-z0-9+.\-]{0,31}:)?//([^/?#\\]*)|([^/?#\\:@\s]++)(?::\d*+)?(?:[/?#\\]|$)"
)
_UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_HEX_RE = re.compile(r"[0-9a-fA-F]{16,}")
_HEX_IP4_LABEL_RE = re.compile(r"[0-9a-f]{8}")  # lowercased host label; all digits is :id
_HEX_IN_RE = re.compile(r"(?<![0-9A-Za-z])(?=[a-fA-F]*[0-9])[0-9a-fA-F]{16,}(?![0-9A-Za-z])")
_TOKEN_CHARS_RE = re.compile(r"[A-Za-z0-9_\-+/=.~]{20,}")
_TOKEN_SPLIT_RE = re.compile(r"[_\-+/=.~]")
_EXT_RE = re.compile(r"(.+?)(\.[A-Za-z][A-Za-z0-9]{0,5})")
# RFC 3986 pchar (minus nothing): segments made of these are emitted as they are.
_SAFE_SEGMENT_RE = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@%]+")
_SEGMENT_SAFE_CHARS = "-._~!$&'()*+,;=:@%"
_PLAIN_SHORT_RE = re.compile(r"[A-Za-z0-9_\-]+")
# A plain address: no "%"/"+" (so it is not decoded), not starting with "@"/"~" (no
# handle), and a domain character right after the "@" (so _EMAIL_RE matches at 0).
_PLAIN_EMAIL_RE = re.compile(r"[A-Za-z0-9._\-]+@[A-Za-z0-9\-][A-Za-z0-9.\-]*")


def _is_token(s: str) -> bool:
    """Heuristic for base64/base64url-like tokens of 20+ characters (JWTs, session ids).

    Slugs ("how-to-bake-bread-in-10-minutes", "iphone15-pro-review") are made of words;
    tokens are mostly pieces that mix letters and digits. Letters-only random tokens are
    rare (about 2% of 22-char tokens) and are not detected.
    """
    if not _TOKEN_CHARS_RE.fullmatch(s):
        return False
    if s.endswith("="):  # base64 padding
        return True
    # Pieces are [A-Za-z0-9]*; one that is neither all letters nor all digits mixes both.
    mixed = sum(
        len(piece)
        for piece in _TOKEN_SPLIT_RE.split(s)
        if piece and not piece.isalpha() and not piece.isdigit()
    )
    return mixed * 2 >= len(s)


def _id_placeholder(token: str) -> str | None:
    """Placeholder for a token that is, as a whole, a number, UUID, hash or opaque token."""
    if token.isdecimal():
        return ":num"
    if _UUID_RE.fullmatch(token):
        return ":uuid"
    if _HEX_RE.fullmatch(token) or _is_token(token):
        return ":hash"
    return None


@lru_cache(maxsize=URL_SEGMENTS)
def _segment(raw: str) -> str:
    """Template one path segment: a placeholder if it looks like an identifier.

    Cache misses are mostly ids (numbers, UUIDs, emails), so those shapes are settled
    first; each shortcut gives exactly what _segment_full gives for that shape.
    """
    # Digits of any script: ":num" from the short path (ASCII) or decoded.isdecimal().
    if raw.isdecimal():
        return ":num"
    # Hex and "-" only: no "%", "+", "@", "." or ":", so the UUID check is the first to fire.
    if len(raw) == 36 and _UUID_RE.fullmatch(raw):
        return ":uuid"
    if "@" in raw and _PLAIN_EMAIL_RE.fullmatch(raw):  # the contains_email check fires
        return ":email"
    return _segment_full(raw)


def _segment_full(raw: str) -> str:
    """All the checks of _segment, in order (its shortcuts are checked against this)."""
    # Fast path for short plain segments ("api", "v2", "item-42", "555-123-4567"): too
    # short for a UUID/hash/token, no "@", "." or ":" so no email or IP; only numbers
    # (all digits, 6+ digit runs, phone or card shapes) can make them identifying.
    if len(raw) < 16 and _PLAIN_SHORT_RE.fullmatch(raw):
        if raw.isdigit():
            return ":num"
        short = identifier_kinds(raw)
        if not short:
            return raw
        return ":email" if EMAIL in short else IP_HOST if IP in short else ":id"
    decoded = unquote_plus(raw) if ("%" in raw or "+" in raw) else raw
    if decoded.isdecimal():
        return ":num"
    # What the scrubber finds, also in disguise (encoded, zero-width, base64...).
    kinds = identifier_kinds(decoded, encoded_ids=True)
    if "+" in raw or "%" in raw:
        # "+" read as a space breaks base64, whose alphabet has it; unquote_plus reads an
        # overlong "%C1%80" as two U+FFFD where the scrubber's view reads it as an "@".
        kinds |= identifier_kinds(raw, encoded_ids=True)
    if EMAIL in kinds:
        return ":email"
    if IP in kinds:
        return IP_HOST
    if not decoded.isascii() or "%" in decoded:
        # Judge id shapes (hex, UUID, tokens) as the detection view reads them too: a
        # zero-width space must not hide a cookie id from the hex check.
        view = detection_view(decoded).text
        if view and view != decoded and (alt := _segment_full(view)).startswith(":"):
            return alt
    if decoded[0] in "@~" and len(decoded) > 1 and "@" not in decoded[1:]:
        return ":handle"  # "/@jane" (Medium, Mastodon, YouTube), "/~jane" (home dirs)
    # Keep the extension of "12345.json" / "<sha>.pdf": it is not identifying.
    m = _EXT_RE.fullmatch(decoded)
    if m is not None and (placeholder := _id_placeholder(m.group(1))) is not None:
        return placeholder + m.group(2)
    placeholder = _id_placeholder(decoded) or _id_placeholder(raw)
    if placeholder is not None:
        return placeholder
    if _UUID_RE.search(decoded):
        return ":uuid"
    if _HEX_IN_RE.search(decoded):
        return ":hash"
    if kinds or split_id_spans(decoded):
        return ":id"
    if _SAFE_SEGMENT_RE.fullmatch(raw):
        return raw
    return quote(raw, safe=_SEGMENT_SAFE_CHARS, errors="replace")


def _punycode(label: str) -> str | None:
    """The Unicode of an IDNA "xn--" label, or None if it is none. "xn--8hbffaaagihp" is
    a phone number in Arabic-Indic digits, which a browser shows as such."""
    if not label.startswith("xn--"):
        return None
    try:
        return label[4:].encode("ascii").decode("punycode")
    except (UnicodeError, ValueError):
        return None


def _host_label(label: str, cased: str) -> str:
    if len(label) < 6:
        return label
    if (uni := _punycode(label)) is not None:  # judged as the Unicode it stands for
        plain = detection_view(uni).text
        if plain.isascii() and plain and (judged := _host_label(plain, plain)) != plain:
            return judged
    if not label.isascii():  # judged without combining marks: "0000a\u0301..." is hex
        plain = detection_view(label).text
        if plain != label and plain.isascii():
            judged = _host_label(plain, detection_view(cased).text)
            if judged != plain:
                return judged
    placeholder = _id_placeholder(label)
    if placeholder is not None:
        return ":id" if placeholder == ":num" else placeholder
    if _HEX_IP4_LABEL_RE.fullmatch(label) and not label.isalpha():
        return IP_HOST  # "c0a8010f.example.net": an IPv4 address in hex (as rbldnsd, nip.io)
    if _UUID_RE.search(label):
        return ":uuid"
    if _HEX_IN_RE.search(label):
        return ":hash"
    return ":id" if scrub_text(label) != label or identifier_kinds(cased, True) else label


@lru_cache(maxsize=URL_HOSTS)
def _host(authority: str) -> str:
    """Normalized host of a URL authority: lowercase, no userinfo/port; ":ip" for IP
    literals, "" if empty, INVALID if malformed. Labels that look like ids (per-user or
    per-tenant subdomains such as "a1b2c3d4e5f6a7b8.cdn.net") become placeholders.
    """
    hostport = authority.rpartition("@")[2].strip()
    if hostport.startswith("["):
        end = hostport.find("]")
        if end == -1:
            return INVALID
        return IP_HOST if ip_prefix(hostport[1:end], 32, 128) is not None else INVALID
    cased = hostport.partition(":")[0].rstrip(".")
    if not cased.isascii():  # as IDNA does: full-width "１９２.０.２.１" is 192.0.2.1
        cased = unicodedata.normalize("NFKC", cased).rstrip(".")
    host = cased.lower()
    if not host:
        return ""
    if len(host) > 253:
        return INVALID
    if _IPV4_HOST_RE.fullmatch(host):
        return IP_HOST
    if not _HOST_RE.fullmatch(host):
        return INVALID
    # An identifier spread over labels ("192.0.2.1.example.org", as wildcard-DNS services
    # serve it, or "4111.1111.1111.1111.example.com") is no host name: it becomes ":ip"
    # or ":id" wherever it stands. One inside a single label is the label check's job.
    spread = [(a, b, ph) for a, b, ph in identifier_spans(cased) if "." in cased[a:b] or ph == IP]
    spread += [(a, b, ":id") for a, b in split_id_spans(cased) if "." in cased[a:b]]
    spread.sort()
    if spread:
        parts: list[str] = []
        pos = 0
        for a, b, ph in spread:
            parts += (cased[pos:a], IP_HOST if ph == IP else ":id")
            pos = b
        cased = "".join((*parts, cased[pos:]))
        host = cased.lower()
    if len(host) < 6 or not any(len(label) >= 6 for label in host.split(".")):
        return host
    # Labels are judged as written: lowercased, a base64 label no longer decodes to what
    # it hides, yet its case is easy to search back (the decoded text must make sense).
    return ".".join(
        _host_label(a, b) for a, b in zip(host.split("."), cased.split("."), strict=True)
    )


def _path_template(path: str, escaped: list[Span] | None = None) -> str:
    """Segment templates joined by "/" (no leading slash), at most URL_MAX_DEPTH deep.
    ``escaped``: identifiers read across a backslash (offsets in ``path``, see
    _escaped_ids); every piece one of them touches becomes its placeholder."""
    pieces = path.split("/")
    marked: dict[int, str] = {}  # piece index -> placeholder
    start = 0
    for j, piece in enumerate(pieces):
        for a, b, ph in escaped or ():
            if a < start + len(piece) and start < b:
                marked.setdefault(j, _SPAN_SEGMENT.get(ph, ":id"))
        start += len(piece) + 1
    if ";" in path:  # matrix params (";jsessionid=...") are dropped; rare, so only then
        for j, raw in enumerate(pieces):
            # An identifier the cut would part ("jane.doe&#x40;example.org": an entity's
            # ";") makes the piece its placeholder, or the local part would be kept.
            cut = raw.find(";")
            if cut > 0 and j not in marked:
                for a, b, ph in identifier_spans(raw):
                    if a < cut < b:
                        marked[j] = _SPAN_SEGMENT.get(ph, ":id")
                        break
        pieces = [raw.partition(";")[0] for raw in pieces]
    kept: list[str] = []  # the path as walked: "." gone, ".." applied, cut at the depth cap
    kept_at: list[int] = []  # the piece index of each kept segment
    for j, seg in enumerate(pieces):
        if not seg or seg == ".":
            continue
        if seg == "..":
            if kept:
                kept.pop()
                kept_at.pop()
            continue
        kept.append(seg)
        kept_at.append(j)
        if len(kept) > URL_MAX_DEPTH:
            break
    # Neighbours are judged together on the walked path ("a/./b" is "a/b" to a reader).
    across = _across_segments("/".join(kept), kept)
    segments: list[str] = []
    for i, seg in enumerate(kept[:URL_MAX_DEPTH]):
        if (hidden := marked.get(kept_at[i])) is not None:
            segments.append(hidden)
            continue
        out = _segment(seg)
        segments.append(across.get(i, out) if not out.startswith(":") else out)
    return "/".join(segments) + ("/..." if len(kept) > URL_MAX_DEPTH else "")


def _escaped_ids(raw: str) -> list[Span]:
    """Identifiers the scrubber reads only across a backslash of ``raw``: "jane.doe\\u0040
    example.org", "\\x40", "\\100", "\\u{40}". Browsers read "\\" as "/" in http(s)
    URLs, and that cut would part the escape from its neighbours and leave every piece
    looking plain (the local part a segment or the host, the domain the next segment).
    A find that the "/" reading also makes (an address in a segment after a "\\" used as
    a separator, "x.com\\\\x00000@aaa.com") is left to the segments."""
    if "\\" not in raw:
        return []
    found = [(a, b, ph) for a, b, ph in identifier_spans(raw) if "\\" in raw[a:b]]
    if not found:
        return []
    slashed = identifier_spans(raw.replace("\\", "/"))
    return [
        (a, b, ph)
        for a, b, ph in found
        if not any(sa < b and a < sb and sph == ph for sa, sb, sph in slashed)
    ]


# An address of 320 characters (64 + "@" + 255), each written as a 6-character escape.
_ESCAPED_ID_MAX = 6 * 320
_SPAN_SEGMENT = {EMAIL: ":email", IP: IP_HOST}
_B64_HEAD_RE = re.compile(r"[A-Za-z0-9+=]+")
_B64_TAIL_RE = re.compile(r"[A-Za-z0-9+=]+$")


def _split_token(pieces: list[str]) -> bool:
    """Could a standard base64 token be cut at a "/" here? The end of one piece and the
    start of the next in base64 characters, 10+ together, neither plain lowercase nor
    only digits: only then is the whole path scanned again (ordinary paths skip it)."""
    for prev, piece in pairwise(pieces):
        tail = _B64_TAIL_RE.search(prev)
        head = _B64_HEAD_RE.match(piece)
        if tail is None or head is None:
            continue
        joined = tail.group() + head.group()
        if len(joined) >= 10 and not joined.islower() and not joined.isdigit():
            return True
    return False


def _spans_pieces(path: str, a: int, b: int, ph: str) -> bool:
    """Does a find over ``path[a:b]`` cross a "/" and count there? Addresses (an email
    with a dotted domain), or numbers inside an encoded token (letters in the span):
    digit groups over plain segments are ":num" already, and "item-42/10000" is no phone."""
    text = path[a:b]
    if "/" not in text:
        return False
    if ph == EMAIL:
        seen = detection_view(text).text  # "%40" is an "@" too
        return "." in seen[seen.rfind("@") + 1 :] or "@" not in seen
    return ph == IP or any(c.isalpha() for c in text)


def _cut_at(path: str, a: int, last: int) -> bool:
    """Is a visible "@" in ``path[a:last + 1]`` next to a "/"? Otherwise the address
    sits whole in one segment (judged there) and joining only glued neighbours on."""
    seen = detection_view(path[a : last + 1]).text  # "%40" is an "@" too
    ats = [i for i, c in enumerate(seen) if c == "@"]
    return not ats or any(seen[i - 1 : i] == "/" or seen[i + 1 : i + 2] == "/" for i in ats)


def _across_segments(path: str, pieces: list[str]) -> dict[int, str]:
    """Placeholders for pieces that an address spans together with its neighbours, which
    no piece shows alone: standard base64 split at its "/", "v1/2/3/4"."""
    if "/" not in path:
        return {}
    # Addresses only (email, IP): digit groups over segments are all-digit, so ":num"
    # already, and "item-42/10000" is no phone number. And ids cut into hex groups.
    spans = [(a, b, ID) for a, b in split_id_spans(path) if "/" in path[a:b]]
    split_at = any(p.startswith("@") or p.endswith("@") for p in pieces) and "." in path
    if _split_token(pieces) or split_at:
        spans += [
            (a, b, ph) for a, b, ph in identifier_spans(path) if _spans_pieces(path, a, b, ph)
        ]
        # And with the "/"s taken out: base64 cut on a 4-character boundary
        # ("amFuZS5kb2VAZXhh/bXBsZS5jb20"), "jane.doe@/example.com", "jane.doe/@/...".
        joined = path.replace("/", "")
        at = [i for i, c in enumerate(path) if c != "/"]  # joined offset -> path offset
        spans += [
            (at[a], at[b - 1] + 1, ph)
            for a, b, ph in identifier_spans(joined)
            if _spans_pieces(path, at[a], at[b - 1] + 1, ph) and _cut_at(path, at[a], at[b - 1])
        ]
    if not spans:
        return {}
    out: dict[int, str] = {}
    start = 0
    for i, piece in enumerate(pieces):
        end = start + len(piece)
        # A short plain word ("u", "users") beside an encoded token is a page name, not
        # a fragment of the token: a span over a whole run would otherwise take it too.
        # (A split hex id takes its letter-only groups too: "/8f3a2b91/cafebabe".)
        word = piece.isalpha() and len(piece) < 12
        for a, b, ph in spans:
            if a < end and start < b and (ph == ID or not word):
                out.setdefault(i, _SPAN_SEGMENT.get(ph, ":id"))
        start = end + 1
    return out


def _cap(out: str) -> str:
    return out if len(out) <= URL_MAX_LEN else out[: URL_MAX_LEN - 3] + "..."


def _url_template_impl(url: str) -> str:
    raw = url.strip()
    s = raw.replace("\\", "/")  # browsers treat "\" as "/" in http(s) URLs
    escaped = _escaped_ids(raw)  # same offsets in raw and s
    if not s:
        return NONE
    # The two common schemes first: the same split as the _SCHEME_RE branch, minus a regex.
    if s.startswith("https://"):
        rest = s[8:]
    elif s.startswith("http://"):
        rest = s[7:]
    elif s.startswith("//"):
        rest = s[2:]
    elif (m := _SCHEME_RE.match(s)) is not None and s.startswith("//", m.end()):
        rest = s[m.end() + 2 :]
    elif m is not None:
        after = s[m.end() :]
        port = after.partition("/")[0]
        if not (port.isascii() and port.isdigit()):
            # Opaque URI (mailto:, data:, javascript:, urn:...): only the scheme is kept,
            # and only if it looks like one (no digits that could be an identifier).
            scheme = m.group().lower()
            return scheme if _OPAQUE_SCHEME_RE.fullmatch(scheme) else INVALID
        rest = s  # "example.com:8080/path": a host with a port, no scheme
    else:
        # Relative reference: a path-only template, as written (with or without "/").
        if not s.isprintable() or " " in s:
            return INVALID
        path = _path_template(s, escaped)
        return _cap("/" + path if s.startswith("/") else path or "/")
    authority, _, path = rest.partition("/")
    auth_at = len(s) - len(rest)  # where the authority starts; the path follows its "/"
    path_at = auth_at + len(authority) + 1
    if any(a < path_at - 1 and auth_at < b for a, b, _ in escaped):
        return INVALID  # the host itself (or its userinfo) is cut out of an identifier
    host = _host(authority)
    if host == INVALID:
        return INVALID
    path_t = _path_template(path, [(a - path_at, b - path_at, ph) for a, b, ph in escaped])
    if not host and not path_t:
        return INVALID  # "http://", "//": nothing at all
    return _cap(f"{host}/{path_t}")


@lru_cache(maxsize=URL_PATHS)
def _url_template_cached(url: str) -> str:
    try:
        return _url_template_impl(url)
    except Exception:  # last line of defence: garbage must never stop the stream
        return INVALID


def url_template(url: str) -> str:
    """Host + path template of a URL with identifying segments replaced by placeholders.

    "https://Portal.Example.com:8443/users/jane.doe@x.com/orders/12345?token=abc#top"
    -> "portal.example.com/users/:email/orders/:num".

    Scheme, port, userinfo, query, fragment and ";params" are dropped; the host is
    lowercased (":ip" if it is an IP address). Segment placeholders: ":num" (all
    digits), ":uuid", ":hash" (16+ hex chars, or a base64/base64url-like token of 20+
    chars), ":email" (also percent-encoded), ":ip" (segment containing an IP address),
    ":handle" ("@jane", "~jane"), ":id" (anything else scrub_text would touch, e.g. a
    6+ digit run). A file extension
    survives ("/:num.json"). The trailing slash is dropped except for the root ("x.com/").
    At most 8 segments (then "/...") and 200 characters (then "..."). Relative URLs give
    a path-only template ("/users/:num"), opaque URIs their scheme ("mailto:"), empty
    input "(none)" and unparseable input "<invalid>"; it never raises.
    """
    if not isinstance(url, str):
        return NONE if url is None else INVALID
    if len(url) > URL_INPUT_MAX:
        return INVALID
    # Cut query and fragment *before* the cache lookup: they are the most unique part
    # of a URL (tokens, search terms) and would otherwise flood the cache.
    return _url_template_cached(_without_query_and_fragment(url))


# The digits of an HTML numeric entity, after its "&#".
_ENTITY_DIGITS_RE = re.compile(r"[xX][0-9A-Fa-f]{1,8}|[0-9]{1,10}")


def _without_query_and_fragment(url: str) -> str:
    """The URL up to its query or fragment. A "#" of an HTML numeric entity ("&#x40;",
    "&#64;") starts no fragment: cut there, "/u/jane.doe&#x40;example.org" left the
    segment "jane.doe&", an address's local part (red team)."""
    head = url.partition("?")[0]
    at = head.find("#")
    while at > 0 and head[at - 1] == "&" and _ENTITY_DIGITS_RE.match(head, at + 1):
        at = head.find("#", at + 1)
    return head if at < 0 else head[:at]


@lru_cache(maxsize=URL_HOSTS)
def _referrer_host(authority: str) -> str:
    host = _host(authority)
    if host == "":
        return INVALID
    if host.startswith("www."):
        host = host[4:]
        if not host:
            return INVALID
    return host


def referrer_domain(ref: str) -> str:
    """The referring site: host only, lowercased, without a leading "www.".

    "https://www.Google.com/search?q=jane+doe" -> "google.com" (the search terms vanish
    with everything but the host). IP hosts give ":ip", an empty or missing referrer
    (also "-", as logged by web servers) "(none)", anything unparseable "<invalid>".
    """
    if not isinstance(ref, str):
        return NONE if ref is None else INVALID
    if len(ref) > URL_INPUT_MAX:
        return INVALID
    s = ref.strip()
    if not s or s == "-":
        return NONE
    m = _REF_AUTHORITY_RE.match(s)
    if m is None:
        return INVALID
    group = 1 if m.group(1) is not None else 2
    authority = m.group(group)
    # Only an identifier touching the host matters here: it ends at the first "/", "?" or
    # "#" after the host (an address or IP holds none), and at most an escaped address's
    # length past it, so a long query or path of escapes is not scanned.
    end = m.end(group)
    if "\\" in s:  # the common referrer has no backslash: nothing to look for
        cut = min([end + _ESCAPED_ID_MAX] + [i for c in "/?#" if (i := s.find(c, end)) >= 0])
        if any(a < end and m.start(group) < b for a, b, _ in _escaped_ids(s[:cut])):
            return INVALID  # "jane.doe\\u0040example.org": the host is an address's local part
    if "." not in authority[1:-1] and m.group(1) is None:
        return INVALID  # a scheme-less referrer must look like "host.tld"
    try:
        return _referrer_host(authority)
    except Exception:  # never let a malformed header stop the stream
        return INVALID
