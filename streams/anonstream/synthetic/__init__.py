"""Synthetic raw events for anonstream (input contract v1): the demo, `anonstream generate`,
the tests and the benchmarks all draw their traffic from here.

Everything produced here is FAKE.  Personal-looking values only come from reserved or
fictitious spaces:

* e-mail domains are sub-domains of ``example.com`` / ``example.org`` / ``example.net``
  (RFC 2606), the web site is ``https://www.example.com``;
* IPv4 addresses are drawn from the documentation ranges 192.0.2.0/24, 198.51.100.0/24
  and 203.0.113.0/24 (RFC 5737), IPv6 addresses from 2001:db8::/32 (RFC 3849);
* phone numbers are ``555-0100`` .. ``555-0199`` (reserved for fiction in the NANP);
* card numbers are Luhn-valid 16-digit numbers from the ``4000`` test range;
* people are combinations of a small built-in list of first and last names, streets and
  cities are invented.

Generation is pure: no Kafka, no clock, no global state.  Output is a deterministic
function of the :class:`Workload` (including its seed) and of the sequence of calls made
on an :class:`EventGenerator`.  Topics and required fields come from the input contract
(``core/contract.py``): web activity goes to :data:`TOPIC_WEB`, service usage to
:data:`TOPIC_USAGE`.

The package, by job: ``kinds`` (topics, fields, types, the workload), ``vocabulary`` (the
invented names), ``sampling`` (vectorised draws), ``population`` (people, customers,
pages), ``generator`` (the events), ``identifiers`` (what an event would leak),
``malformed`` (bad messages), ``produce`` (into Kafka; imported on its own, it needs
aiokafka).
"""

from anonstream.synthetic.generator import EventGenerator
from anonstream.synthetic.identifiers import identifiers_of
from anonstream.synthetic.kinds import (
    CONTRACT_OF_TOPIC,
    DEFAULT_START_MS,
    MAX_MESSAGE_BYTES,
    REQUIRED_COMMON,
    REQUIRED_USAGE,
    REQUIRED_WEB,
    SERVICES_FOR_TYPE,
    TOPIC_USAGE,
    TOPIC_WEB,
    USAGE_TYPES,
    WEB_TYPES,
    Workload,
)
from anonstream.synthetic.malformed import bad_messages
from anonstream.synthetic.sampling import luhn_valid

__all__ = [
    "CONTRACT_OF_TOPIC",
    "DEFAULT_START_MS",
    "MAX_MESSAGE_BYTES",
    "REQUIRED_COMMON",
    "REQUIRED_USAGE",
    "REQUIRED_WEB",
    "SERVICES_FOR_TYPE",
    "TOPIC_USAGE",
    "TOPIC_WEB",
    "USAGE_TYPES",
    "WEB_TYPES",
    "EventGenerator",
    "Workload",
    "bad_messages",
    "identifiers_of",
    "luhn_valid",
]
