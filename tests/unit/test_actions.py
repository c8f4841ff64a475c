"""Typed actions (core/actions.py), the generalizer registry (core/generalizers.py) and the
contribution section (core/contribution.py): one vocabulary, read and described in one
place each, spelled in messages and in `explain` exactly as in a pipeline file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from anonstream.core.actions import ACTIONS, Action, Mechanism
from anonstream.core.contribution import KEYS, Contribution
from anonstream.core.generalizers import GENERALIZERS, Kept, dimension_maker
from anonstream.core.pipeline import PipelineError, parse_pipeline
from anonstream.explain import explain_pipeline

WEB = Path("pipelines/web_activity.yaml")


def _web(**fields: Any) -> dict[str, Any]:
    doc = yaml.safe_load(WEB.read_text(encoding="utf-8"))
    doc["fields"].update(fields)
    return doc


def test_actions_are_the_yaml_spellings() -> None:
    assert ACTIONS == ("drop", "keep", "pseudonymize", "generalize", "measure", "dedupe",
                       "window")  # fmt: skip
    assert [Action(a) for a in ACTIONS] == list(Action)
    assert f"{Action.GENERALIZE:<12}|" == "generalize  |"  # explain's column
    assert {m.value for m in Mechanism} == {"laplace", "gaussian"}


def test_a_parsed_pipeline_holds_enums() -> None:
    doc = _web()
    doc["noise"] = {"mechanism": "gaussian", "epsilon": 1, "delta": 1e-6}
    p = parse_pipeline(doc, "t")
    assert p.fields["ip"].action is Action.GENERALIZE
    assert p.fields["event_id"].action is Action.DEDUPE
    assert p.noise is not None and p.noise.mechanism is Mechanism.GAUSSIAN
    assert p.noise.mechanism == "gaussian"


def test_the_registry_is_the_parser_vocabulary() -> None:
    names = ("ip_prefix", "user_agent", "url", "referrer_domain", "band", "text")
    assert tuple(GENERALIZERS) == names
    with pytest.raises(PipelineError) as exc:
        parse_pipeline(_web(url={"generalize": "zip_code"}), "t")
    reason = f"unknown generalizer 'zip_code'; expected one of {names}"
    assert str(exc.value) == f"t: fields.url: {reason}"


def test_each_generalizer_describes_itself_in_explain() -> None:
    p = parse_pipeline(_web(ip={"generalize": "ip_prefix", "ipv4_bits": 16, "ipv6_bits": 32}), "t")
    text = explain_pipeline(p)
    for name in ("ip", "user_agent", "url", "referrer"):
        fa = p.fields[name]
        maker = dimension_maker(fa)
        assert maker is GENERALIZERS[fa.generalizer or ""]
        assert maker.describe(fa) in text
    assert "IPv4 to /16, IPv6 to /32 network prefix" in text
    assert dimension_maker(p.fields["type"]) is Kept
    assert Kept.describe(p.fields["type"]) in text
    with pytest.raises(ValueError, match="no dimension function"):
        dimension_maker(p.fields["user_email"])


@pytest.mark.parametrize(
    ("entry", "path", "reason"),
    [
        ({"generalize": "ip_prefix", "ipv4_bits": 25}, "fields.ip.ipv4_bits",
         "must be an integer from 0 to 24"),
        ({"generalize": "ip_prefix", "zone": 1}, "fields.ip.zone", "unknown option for generalize"),
        ({"generalize": "text"}, "fields.ip",
         "free-text scrubbing is not generalization enough for a quasi field; use its own "
         "generalizer"),
        ({"generalize": "band"}, "fields.ip", "band generalizes numeric fields only"),
    ],
)  # fmt: skip
def test_a_generalizer_reads_its_own_options(entry: Any, path: str, reason: str) -> None:
    with pytest.raises(PipelineError) as exc:
        parse_pipeline(_web(ip=entry), "t")
    assert (exc.value.path, exc.value.reason) == (path, reason)


def test_contribution_keys_are_the_yaml_keys() -> None:
    assert KEYS == {"max_events_per_unit_per_cell": 10, "max_cells_per_unit_per_window": 20}
    doc = _web()
    doc["contribution"] = {"max_cells_per_unit_per_window": 3}
    p = parse_pipeline(doc, "t")
    assert p.contribution == Contribution(max_events_per_unit_per_cell=10,
                                          max_cells_per_unit_per_window=3)  # fmt: skip
    doc["contribution"] = {"max_cells_per_unit": 3}
    with pytest.raises(PipelineError) as exc:
        parse_pipeline(doc, "t")
    assert (exc.value.path, exc.value.reason) == ("contribution.max_cells_per_unit", "unknown key")
