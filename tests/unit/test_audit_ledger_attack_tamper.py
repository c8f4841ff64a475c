"""Red-team regressions: a tampered ledger file. A charge of epsilon -3 and delta -δ
beside a window charged twice made the period add up to exactly its budget, and
`anonstream audit --ledger` said OK; a charge of NaN compared false with every bound; a
time or a loss of the wrong type failed with a TypeError about operands. Every charge is
now read with its types, a loss is a finite number >= 0, and a bad line stops the audit
(exit 2) with the line and the field, never the value."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from anonstream.audit.ledger import read_ledger_file
from anonstream.cli import app
from tests.unit.test_audit_ledger import _stream

_BAD_LOSS = st.one_of(
    st.floats(max_value=-1e-12, allow_nan=False),
    st.sampled_from([float("nan"), float("inf"), -float("inf"), True, "3.0", None, [1.0]]),
)
_BAD_TIME = st.one_of(
    st.sampled_from(["1796033700000", 1.5e12, True, None, 2**63, -(2**63) - 1]),
    st.floats(allow_nan=True),
)
_BAD_NAME = st.one_of(st.integers(), st.none(), st.lists(st.text(max_size=3), max_size=2))


def _write(path: Path, charges: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(c) + "\n" for c in charges))


@pytest.fixture(scope="module")
def genuine(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Any], list[Any]]:
    return _stream(tmp_path_factory.mktemp("ledger"))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    key=st.sampled_from(["epsilon", "delta", "start_ms", "end_ms", "period", "pipeline", "output"]),
    data=st.data(),
)
def test_a_tampered_charge_stops_the_audit(
    tmp_path: Path, genuine: tuple[list[Any], list[Any]], key: str, data: st.DataObject
) -> None:
    _, charges = genuine
    bad = {"epsilon": _BAD_LOSS, "delta": _BAD_LOSS, "pipeline": _BAD_NAME, "output": _BAD_NAME}
    value = data.draw(bad.get(key, _BAD_TIME))
    path = tmp_path / "tampered.jsonl"
    _write(path, [*charges, dict(charges[0], **{key: value})])
    with pytest.raises(ValueError, match=f"line {len(charges) + 1}: {key}") as err:
        read_ledger_file(path)
    if isinstance(value, str) and value:
        assert value not in str(err.value).split(key, 1)[1]


def test_a_negative_charge_no_longer_hides_an_overspent_period(
    tmp_path: Path, genuine: tuple[list[Any], list[Any]]
) -> None:
    recs, charges = genuine
    stream = tmp_path / "stream.jsonl"
    stream.write_text("".join(json.dumps(r) + "\n" for r in recs))
    first = charges[0]
    again = dict(first, digest="0" * 32, rerelease=True)  # charged twice: over the budget
    refund = dict(again, digest="1" * 32, epsilon=-first["epsilon"], delta=-first["delta"])
    ledger = tmp_path / "ledger.jsonl"
    _write(ledger, [*charges, again, refund])
    result = CliRunner().invoke(app, ["audit", "-i", str(stream), "--ledger", str(ledger)])
    assert result.exit_code == 2, result.output
    _write(ledger, [*charges, again])  # without the refund: the overspend is an error
    result = CliRunner().invoke(app, ["audit", "-i", str(stream), "--ledger", str(ledger)])
    assert result.exit_code == 1 and "over the budget" in result.output


def test_the_genuine_ledger_still_reads(
    tmp_path: Path, genuine: tuple[list[Any], list[Any]]
) -> None:
    _, charges = genuine
    path = tmp_path / "ok.jsonl"
    _write(path, charges)
    assert read_ledger_file(path) == charges
