package io.anonstream.peer;

import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.LongAdder;

/**
 * Counters shared by the stream threads of this one process (the benchmark runs one
 * instance). They tell the main thread when the whole input has gone through both
 * sub-topologies, and feed the report line.
 */
final class Stats {
    static final LongAdder seen = new LongAdder(); // input records read
    static final LongAdder rejected = new LongAdder(); // undecodable, no time, no person
    static final LongAdder forwarded = new LongAdder(); // (cell, pseudonym) rows sent on
    static final LongAdder arrived = new LongAdder(); // rows read by the release stage
    static final LongAdder late = new LongAdder(); // rows for a window already released
    static final LongAdder cells = new LongAdder(); // cells released (>= k people)
    static final LongAdder suppressed = new LongAdder(); // cells below k, not released
    static final AtomicLong firstEventMs = new AtomicLong(0);
    /** Release tasks that have released every open window after the input ended. */
    static final Set<String> flushed = ConcurrentHashMap.newKeySet();

    static volatile long expected = Long.MAX_VALUE;

    private Stats() {}

    /** All input read, and every row sent to the release stage has arrived there. */
    static boolean inputDone() {
        long sent = forwarded.sum();
        return seen.sum() >= expected && arrived.sum() == sent;
    }
}
