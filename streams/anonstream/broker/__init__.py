"""A real local Kafka broker and its topics, by job: ``jars`` (fetch and cache the jars),
``config`` (its configuration files), ``ports``, ``process`` (our broker's processes and
logs), ``local`` (run and stop a broker: ``LocalKafka``, and the detached one of
``anonstream kafka up|down|status``), ``state`` (that one's state file), ``admin`` (talk
to a broker from sync code), ``plan``/``topics`` (the pipelines' topics), ``secure`` (SCRAM
over TLS)."""


class BrokerError(RuntimeError):
    """The local Kafka broker could not be fetched, started or stopped."""
