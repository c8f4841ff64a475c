"""Independent audit of released records: re-checks a stream of releases from the outside.

The audit reads only what a partner receives (a JSONL file or an output topic) and checks it
against the output contract (schemas/release-v1.json, docs/output-contract.md). It does not
import the release code on purpose: a bug in the release rules must not be able to hide
itself by also being in the checker. What it can see:

- ``schema``: every record is valid output contract v1.
- ``k``: every aggregate has at least k distinct people (the record's k and ``--k``).
- ``identifier``: no email, IP, card, phone, long number or pseudonym-like token anywhere,
  also encoded or disguised (``audit_detect``: its own detector, not the scrubber's).
- ``duplicate``: one release_id never carries two different contents.
- ``differencing``: no two released numbers of one window whose difference describes fewer
  than k people (identical cells, cells of two outputs, a "*" cell that looks like a total).
- ``noise`` / ``sanity``: declared noise is coherent; exact counts are internally consistent.
- ``budget``: dp outputs (contract v2): no period spends more than its declared budget, the
  summaries' spending adds up, and no aggregate belongs to a window the budget refused.
- ``ledger``: with the privacy ledger given, dp windows against their charges
  (anonstream.audit.ledger).

Findings never echo a suspected identifier: it is masked to its first two characters.

The package, by job: `report` (findings and their rendering), `values` (reading and masking
the values of a record), `schema` (the contract check), `record_rules` and `window_rules`
(the checks on one record, then across the records of a window), `sources` (a list, a file,
a topic, the command).
"""

from anonstream.audit.report import RULES, AuditReport, Finding
from anonstream.audit.schema import SCHEMA_PATH
from anonstream.audit.sources import audit_file, audit_records, audit_topic, run_audit_cli

__all__ = [
    "RULES",
    "SCHEMA_PATH",
    "AuditReport",
    "Finding",
    "audit_file",
    "audit_records",
    "audit_topic",
    "run_audit_cli",
]
