"""Peer implementations of the benchmark job, each runnable as its own process.

``python -m anonstream_load.runners.<name> --bootstrap HOST:PORT --topic T --events N
--group G`` consumes ``T`` from the start with the fresh consumer group ``G`` until ``N``
events are processed, then prints ONE JSON line (see :func:`common.report`) and exits.

* :mod:`.ceiling`: raw aiokafka ``getmany`` + ``orjson.loads``, no other work;
* :mod:`.naive_faust`: the per-event Faust agent a Faust user would write;
* :mod:`.quix`: the same job written for quixstreams.
"""
