"""Scale-out's end of input (--stop-at-end): the end marks in the partials format."""

from __future__ import annotations

import struct

import orjson
import pytest

from anonstream.runtime.scaleout import (
    Partial,
    PartialsRecordError,
    Progress,
    decode_partial,
    encode_partial,
)

_HEAD = struct.Struct("<4sHI")


def _header(raw: bytes) -> dict[str, object]:
    _, _, n = _HEAD.unpack_from(raw)
    head = orjson.loads(raw[_HEAD.size : _HEAD.size + n])
    assert isinstance(head, dict)
    return head


def test_an_end_mark_round_trips_and_a_record_without_one_has_none() -> None:
    marked = Partial([Progress("raw", 0, 5, 1, 2, end=True), Progress("raw", 1, 7, 1, 2)])
    back = decode_partial(encode_partial(marked))
    assert [x.end for x in back.progress] == [True, False]
    assert back.progress == marked.progress
    plain = encode_partial(Partial([Progress("raw", 0, 5, 1, 2)]))
    assert "ended" not in _header(plain)  # what a worker without end marks wrote
    assert not decode_partial(plain).progress[0].end


def test_an_end_mark_leaves_the_progress_entries_as_an_older_reader_checks_them() -> None:
    """The mark is a header key of its own: an older version 2 reader (which reads the
    keys it knows) finds progress entries of five fields, as before, and ignores it."""
    head = _header(encode_partial(Partial([Progress("raw", 3, 5, 1, 2, end=True)])))
    assert head["progress"] == [["raw", 3, 5, 1, 2]]
    assert head["ended"] == [0]


@pytest.mark.parametrize("ended", [[1], [-1], ["0"], 0])
def test_an_end_mark_for_progress_the_record_does_not_have_is_refused(ended: object) -> None:
    raw = encode_partial(Partial([Progress("raw", 0, 5, 1, 2, end=True)]))
    head = _header(raw)
    head["ended"] = ended
    body = orjson.dumps(head)
    forged = _HEAD.pack(b"ASPT", 2, len(body)) + body
    with pytest.raises(PartialsRecordError):
        decode_partial(forged)
