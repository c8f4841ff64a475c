"""Checkpoints that anonstream did not write (offset metadata of another tool, a record
put on the Faust agent's checkpoint topic): an error that names the field or the offset,
never the content; a tombstone on the checkpoint topic deletes that checkpoint."""

from __future__ import annotations

import orjson
import pytest

from anonstream.core.checkpoint import Checkpoint, CheckpointError, decode_checkpoints
from anonstream.faust import read_checkpoint_record

IDENT = "jane.doe@example.com"


@pytest.mark.parametrize("value", [IDENT, 1e400, 10**30, [1]])
def test_a_checkpoint_field_error_never_quotes_the_value(value: object) -> None:
    with pytest.raises(CheckpointError, match="'next'") as err:
        Checkpoint.from_json({"next": value})
    assert "jane" not in str(err.value)
    with pytest.raises(CheckpointError) as err:
        decode_checkpoints(orjson.dumps({"web_activity": {"late": IDENT}}))
    assert "jane" not in str(err.value)


def test_the_faust_checkpoint_topic_record() -> None:
    good = orjson.dumps({**Checkpoint(closed_until=10, next=5).to_json(), "offset": 5})
    assert read_checkpoint_record(b"raw.web-activity/3", good, 0) == (
        ("raw.web-activity", 3),
        Checkpoint(closed_until=10, next=5),
    )
    assert read_checkpoint_record(b"raw.web-activity/3", None, 1) == (("raw.web-activity", 3), None)
    hostile = [
        (None, good),
        (IDENT.encode(), good),
        (b"\xff\xfe/1", good),
        (b"raw/x", good),
        (b"raw/1", b"\x00not json " + IDENT.encode()),
        (b"raw/1", b"[1, 2]"),
        (b"raw/1", orjson.dumps({"next": IDENT})),
    ]
    for key, value in hostile:
        with pytest.raises(CheckpointError, match="checkpoint topic, offset 7") as err:
            read_checkpoint_record(key, value, 7)
        assert "jane" not in str(err.value)
