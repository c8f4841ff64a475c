package io.anonstream.peer;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.util.Locale;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;

/**
 * Per input record: the person (normalized user_email, else visitor_id) becomes a keyed
 * pseudonym, HMAC-SHA256 under a per-day key derived from the secret (so pseudonyms of two
 * days cannot be linked), cut to 64 bits; the cell is "type, URL template, browser". Out
 * goes (cell, pseudonym) at the event's time; the identifiers go no further.
 */
final class Anonymize implements Processor<byte[], Event, String, Long> {
    static final long DAY_MS = 86_400_000L;
    static final char SEP = '\u001f'; // between dimensions in the cell key

    private final byte[] secret;
    private ProcessorContext<String, Long> context;
    private Mac mac;
    private long keyDay = Long.MIN_VALUE;

    Anonymize(byte[] secret) {
        this.secret = secret;
    }

    @Override
    public void init(ProcessorContext<String, Long> context) {
        this.context = context;
        try {
            mac = Mac.getInstance("HmacSHA256");
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("HmacSHA256 is not available", e);
        }
    }

    @Override
    public void process(Record<byte[], Event> record) {
        Stats.seen.increment();
        Stats.firstEventMs.compareAndSet(0, System.currentTimeMillis());
        Event event = record.value();
        if (event == null || event == Event.BAD || event.eventTimeMs == Long.MIN_VALUE) {
            Stats.rejected.increment();
            return;
        }
        String unit = unit(event);
        if (unit == null) {
            Stats.rejected.increment();
            return;
        }
        long pseudonym = pseudonym(Math.floorDiv(event.eventTimeMs, DAY_MS), unit);
        String cell = (event.type == null ? "(none)" : event.type) + SEP
                + Generalize.urlTemplate(event.url) + SEP
                + Generalize.userAgent(event.userAgent);
        Stats.forwarded.increment();
        context.forward(new Record<>(cell, pseudonym, event.eventTimeMs));
    }

    /** The privacy unit: the logged-in email if present, else the cookie id. */
    static String unit(Event event) {
        if (event.userEmail != null) {
            String email = event.userEmail.strip().toLowerCase(Locale.ROOT);
            if (!email.isEmpty()) {
                return "e:" + email;
            }
        }
        if (event.visitorId != null && !event.visitorId.isBlank()) {
            return "v:" + event.visitorId;
        }
        return null;
    }

    private long pseudonym(long day, String unit) {
        try {
            if (day != keyDay) {
                mac.init(new SecretKeySpec(secret, "HmacSHA256"));
                byte[] dayKey = mac.doFinal(("anonstream-kstreams-peer/day/" + day)
                        .getBytes(StandardCharsets.UTF_8));
                mac.init(new SecretKeySpec(dayKey, "HmacSHA256"));
                keyDay = day;
            }
            return ByteBuffer.wrap(mac.doFinal(unit.getBytes(StandardCharsets.UTF_8))).getLong();
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("HMAC key setup failed", e);
        }
    }
}
