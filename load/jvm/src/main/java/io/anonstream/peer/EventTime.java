package io.anonstream.peer;

import java.time.OffsetDateTime;
import java.time.format.DateTimeParseException;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.streams.processor.TimestampExtractor;

/**
 * Event time from the event's own {@code ts}: epoch milliseconds or an RFC 3339 string. An
 * event without a usable time keeps the partition's time (Kafka Streams needs one) and is
 * marked, so the next step counts and drops it.
 */
public final class EventTime implements TimestampExtractor {
    @Override
    public long extract(ConsumerRecord<Object, Object> record, long partitionTime) {
        Object value = record.value();
        if (value instanceof Event event && event != Event.BAD) {
            long ms = parse(event.ts);
            if (ms != Long.MIN_VALUE) {
                event.eventTimeMs = ms;
                return ms;
            }
        }
        return partitionTime >= 0 ? partitionTime : Math.max(record.timestamp(), 0);
    }

    /** Epoch ms of a {@code ts} value, or Long.MIN_VALUE when it is not a usable time. */
    static long parse(Object ts) {
        if (ts instanceof Number n) {
            double v = n.doubleValue();
            return v >= 0 && v < 1e14 ? n.longValue() : Long.MIN_VALUE;
        }
        if (ts instanceof String s) {
            try {
                return OffsetDateTime.parse(s).toInstant().toEpochMilli();
            } catch (DateTimeParseException e) {
                return Long.MIN_VALUE;
            }
        }
        return Long.MIN_VALUE;
    }
}
