package io.anonstream.peer;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.TreeSet;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.kstream.Windowed;
import org.apache.kafka.streams.processor.PunctuationType;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueIterator;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.WindowStore;

/**
 * The release stage, on rows partitioned by cell: hourly tumbling windows by event time,
 * the distinct people of each (window, cell) in a window store (one entry per pair, so a
 * person counts once however many events they have), and when a window closes (stream time
 * past its end plus the allowed lateness) every cell with at least k people goes out.
 * Smaller cells are dropped (no roll-up). A "released" store remembers released windows,
 * so a restart does not release one twice; rows that arrive for a closed window are late
 * and counted.
 *
 * <p>Kafka Streams has no end of input: once the whole input has gone through (see
 * {@link Stats#inputDone()}), a wall-clock punctuation releases the windows still open,
 * as anonstream's --stop-at-end does.
 */
final class Release implements Processor<String, Long, String, String> {
    static final String PAIRS = "pairs";
    static final String RELEASED = "released";
    static final long HOUR_MS = 3_600_000L;
    static final long GRACE_MS = 120_000L; // the pipeline's allowed lateness, 2 minutes
    private static final byte[] PRESENT = {1};
    private static final ObjectMapper JSON = new ObjectMapper();

    private final int k;
    private final String pipeline;
    private ProcessorContext<String, String> context;
    private WindowStore<Bytes, byte[]> pairs;
    private KeyValueStore<Long, Long> released;
    private final TreeSet<Long> open = new TreeSet<>();
    private final TreeSet<Long> done = new TreeSet<>(); // released windows, from the store
    private long streamTime = Long.MIN_VALUE;
    private boolean flushed;

    Release(int k, String pipeline) {
        this.k = k;
        this.pipeline = pipeline;
    }

    @Override
    public void init(ProcessorContext<String, String> context) {
        this.context = context;
        this.pairs = context.getStateStore(PAIRS);
        this.released = context.getStateStore(RELEASED);
        // After a restart: the windows restored from the changelog, minus those released.
        try (KeyValueIterator<Long, Long> it = released.all()) {
            while (it.hasNext()) {
                done.add(it.next().key);
            }
        }
        try (KeyValueIterator<Windowed<Bytes>, byte[]> it = pairs.all()) {
            while (it.hasNext()) {
                long start = it.next().key.window().start();
                if (!done.contains(start)) {
                    open.add(start);
                }
            }
        }
        context.schedule(Duration.ofMillis(100), PunctuationType.WALL_CLOCK_TIME, now -> flushAtEnd());
    }

    @Override
    public void process(Record<String, Long> record) {
        Stats.arrived.increment();
        long ts = record.timestamp();
        long start = Math.floorDiv(ts, HOUR_MS) * HOUR_MS;
        streamTime = Math.max(streamTime, ts);
        // Before the put: the store expires old windows on put.
        while (!open.isEmpty() && open.first() + HOUR_MS + GRACE_MS <= streamTime) {
            release(open.pollFirst());
        }
        if (start + HOUR_MS + GRACE_MS <= streamTime || done.contains(start)) {
            Stats.late.increment();
            return;
        }
        byte[] cell = record.key().getBytes(StandardCharsets.UTF_8);
        Bytes key = Bytes.wrap(ByteBuffer.allocate(cell.length + 8).put(cell)
                .putLong(record.value()).array());
        if (pairs.fetch(key, start) == null) {
            pairs.put(key, PRESENT, start);
            open.add(start);
        }
    }

    private void flushAtEnd() {
        if (flushed || !Stats.inputDone()) {
            return;
        }
        while (!open.isEmpty()) {
            release(open.pollFirst());
        }
        flushed = true;
        Stats.flushed.add(context.taskId().toString());
    }

    private void release(long start) {
        Map<ByteBuffer, int[]> people = new HashMap<>();
        try (KeyValueIterator<Windowed<Bytes>, byte[]> it = pairs.fetchAll(
                Instant.ofEpochMilli(start), Instant.ofEpochMilli(start))) {
            while (it.hasNext()) {
                byte[] key = it.next().key.key().get();
                people.computeIfAbsent(ByteBuffer.wrap(key, 0, key.length - 8).slice(),
                        c -> new int[1])[0]++;
            }
        }
        for (Map.Entry<ByteBuffer, int[]> e : people.entrySet()) {
            int count = e.getValue()[0];
            if (count < k) {
                Stats.suppressed.increment();
                continue;
            }
            String cell = StandardCharsets.UTF_8.decode(e.getKey().duplicate()).toString();
            String[] dims = cell.split(String.valueOf(Anonymize.SEP), 3);
            Map<String, Object> out = new LinkedHashMap<>();
            out.put("kind", "aggregate");
            out.put("pipeline", pipeline);
            out.put("window_start", Instant.ofEpochMilli(start).toString());
            out.put("window_end", Instant.ofEpochMilli(start + HOUR_MS).toString());
            out.put("type", dims[0]);
            out.put("url", dims.length > 1 ? dims[1] : "");
            out.put("user_agent", dims.length > 2 ? dims[2] : "");
            out.put("people", count);
            try {
                // Stamped with the time of release, not the window's: a topic's retention
                // counts from record timestamps, and the benchmark's event times are old.
                context.forward(new Record<>(cell, JSON.writeValueAsString(out),
                        context.currentSystemTimeMs()));
            } catch (JsonProcessingException ex) {
                throw new IllegalStateException("cannot encode a release", ex);
            }
            Stats.cells.increment();
        }
        released.put(start, 1L);
        done.add(start);
    }
}
