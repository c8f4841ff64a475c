"""The load tools (package ``anonstream_load``): the benchmark (``bench``, with its peer
runners and the Kafka Streams peer), the soak run, and the micro-benchmarks (``policy_bench``,
``memory_scan``, ``adversarial``). They import the product, which never imports them; the
synthetic traffic they send comes from the product (``anonstream.synthetic``)."""
