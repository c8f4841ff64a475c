package io.anonstream.peer;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicReference;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Named;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.Repartitioned;
import org.apache.kafka.streams.state.Stores;

/**
 * The benchmark job as a Kafka Streams application (the JVM peer of `anonstream bench`).
 *
 * <pre>
 * input topic (JSON) -> decode (Jackson) + event time -> anonymize: (cell, pseudonym)
 *   -> repartition by cell -> release: distinct people per (hour, cell), cells >= k
 *   -> output topic (JSON)
 * </pre>
 *
 * Arguments: --bootstrap --topic --output --group (application.id) --events (stop after
 * that many input records have gone through) --partitions (of the repartition topic)
 * --threads (num.stream.threads) --k --guarantee (exactly_once_v2 | at_least_once). The
 * key comes from $ANONSTREAM_SECRET, never from the command line. Prints one JSON line.
 */
public final class KStreamsPeer {
    private KStreamsPeer() {}

    public static void main(String[] argv) throws Exception {
        Map<String, String> args = parse(argv);
        String secret = System.getenv("ANONSTREAM_SECRET");
        if (secret == null || secret.length() < 16) {
            System.err.println("ANONSTREAM_SECRET must hold a secret of 16 or more characters");
            System.exit(2);
        }
        long events = Long.parseLong(args.getOrDefault("events", "0"));
        int partitions = Integer.parseInt(args.getOrDefault("partitions", "1"));
        int threads = Integer.parseInt(args.getOrDefault("threads", "1"));
        int k = Integer.parseInt(args.getOrDefault("k", "10"));
        double timeoutS = Double.parseDouble(args.getOrDefault("timeout", "900"));
        String guarantee = args.getOrDefault("guarantee", StreamsConfig.EXACTLY_ONCE_V2);
        if (events < 1 || partitions < 1 || threads < 1 || k < 1) {
            System.err.println("--events, --partitions, --threads and --k must be >= 1");
            System.exit(2);
        }
        Stats.expected = events;
        Path stateDir = Files.createTempDirectory("anonstream-kstreams-");

        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, required(args, "group"));
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, required(args, "bootstrap"));
        props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, threads);
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, guarantee);
        props.put(StreamsConfig.STATE_DIR_CONFIG, stateDir.toString());
        props.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, 1);
        props.put(StreamsConfig.consumerPrefix("auto.offset.reset"), "earliest");

        StreamsBuilder builder = new StreamsBuilder();
        long retention = Release.HOUR_MS + Release.GRACE_MS;
        builder.addStateStore(Stores.windowStoreBuilder(
                Stores.inMemoryWindowStore(Release.PAIRS, Duration.ofMillis(retention),
                        Duration.ofMillis(Release.HOUR_MS), false),
                Serdes.Bytes(), Serdes.ByteArray()).withCachingDisabled());
        builder.addStateStore(Stores.keyValueStoreBuilder(
                Stores.inMemoryKeyValueStore(Release.RELEASED), Serdes.Long(), Serdes.Long())
                .withCachingDisabled());
        Serde<Event> eventSerde = Serdes.serdeFrom(
                (topic, event) -> { throw new UnsupportedOperationException("decode only"); },
                new EventDeserializer());
        byte[] key = secret.getBytes(StandardCharsets.UTF_8);
        String pipeline = args.getOrDefault("pipeline", "web_activity");
        builder.stream(required(args, "topic"),
                        Consumed.with(Serdes.ByteArray(), eventSerde)
                                .withTimestampExtractor(new EventTime()).withName("events"))
                .process(() -> new Anonymize(key), Named.as("anonymize"))
                .repartition(Repartitioned.with(Serdes.String(), Serdes.Long())
                        .withName("cells").withNumberOfPartitions(partitions))
                .process(() -> new Release(k, pipeline), Named.as("release"),
                        Release.PAIRS, Release.RELEASED)
                .to(required(args, "output"), Produced.with(Serdes.String(), Serdes.String())
                        .withName("releases"));

        AtomicReference<Throwable> failure = new AtomicReference<>();
        KafkaStreams streams = new KafkaStreams(builder.build(), props);
        streams.setUncaughtExceptionHandler(e -> {
            failure.compareAndSet(null, e);
            return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        long deadline = System.nanoTime() + (long) (timeoutS * 1e9);
        streams.start();
        boolean complete = false;
        try {
            while (failure.get() == null && System.nanoTime() < deadline) {
                if (Stats.flushed.size() >= partitions) {
                    complete = true;
                    break;
                }
                if (streams.state() == KafkaStreams.State.ERROR
                        || streams.state() == KafkaStreams.State.NOT_RUNNING) {
                    break;
                }
                Thread.sleep(20);
            }
        } finally {
            // A clean close commits the last transaction: the releases of the flush.
            streams.close(Duration.ofSeconds(60));
            streams.cleanUp();
            deleteTree(stateDir);
        }
        Map<String, Object> line = new LinkedHashMap<>();
        line.put("runner", "kstreams");
        line.put("count", Stats.seen.sum());
        long first = Stats.firstEventMs.get();
        line.put("t_first_event", first == 0 ? null : first / 1000.0);
        line.put("t_end", System.currentTimeMillis() / 1000.0);
        line.put("threads", threads);
        line.put("guarantee", guarantee);
        line.put("rejected", Stats.rejected.sum());
        line.put("late", Stats.late.sum());
        line.put("released_cells", Stats.cells.sum());
        line.put("suppressed_cells", Stats.suppressed.sum());
        line.put("complete", complete);
        line.put("vm_hwm_kib", vmHwmKib());
        Throwable error = failure.get();
        if (error != null) {
            line.put("error", error.getClass().getName()); // no message: it may quote data
        }
        System.out.println();
        System.out.println(new ObjectMapper().writeValueAsString(line));
        System.out.flush();
        System.exit(complete && error == null && Stats.seen.sum() == events ? 0 : 1);
    }

    private static Map<String, String> parse(String[] argv) {
        Map<String, String> out = new HashMap<>();
        for (int i = 0; i < argv.length; i++) {
            if (!argv[i].startsWith("--") || i + 1 >= argv.length) {
                System.err.println("usage: --name value ... (bad argument at position " + i + ")");
                System.exit(2);
            }
            out.put(argv[i].substring(2), argv[++i]);
        }
        return out;
    }

    private static String required(Map<String, String> args, String name) {
        String value = args.get(name);
        if (value == null || value.isEmpty()) {
            System.err.println("--" + name + " is required");
            System.exit(2);
        }
        return value;
    }

    private static Long vmHwmKib() {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
                if (line.startsWith("VmHWM:")) {
                    return Long.parseLong(line.replaceAll("[^0-9]", ""));
                }
            }
        } catch (IOException | NumberFormatException e) {
            return null;
        }
        return null;
    }

    private static void deleteTree(Path root) {
        try (var paths = Files.walk(root)) {
            paths.sorted(java.util.Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        } catch (IOException e) {
            // a temporary directory left behind is not worth failing the run for
        }
    }
}
