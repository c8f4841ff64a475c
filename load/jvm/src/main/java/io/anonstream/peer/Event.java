package io.anonstream.peer;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;
import com.fasterxml.jackson.annotation.JsonProperty;

/**
 * The fields of a web-activity event that the job reads. The other fields (customer_id,
 * reseller_id, ip, referrer, campaign_id, duration_ms, event_id) are never bound: they are
 * dropped at decoding.
 */
@JsonIgnoreProperties(ignoreUnknown = true)
public final class Event {
    /** A decoding failure: counted and dropped, never logged (the bytes may hold identifiers). */
    static final Event BAD = new Event();

    /** Epoch milliseconds (a JSON number) or an RFC 3339 string. */
    @JsonProperty("ts")
    public Object ts;

    @JsonProperty("type")
    public String type;

    @JsonProperty("url")
    public String url;

    @JsonProperty("user_agent")
    public String userAgent;

    @JsonProperty("user_email")
    public String userEmail;

    @JsonProperty("visitor_id")
    public String visitorId;

    /** Event time in epoch ms, set by {@link EventTime}; Long.MIN_VALUE when unusable. */
    public long eventTimeMs = Long.MIN_VALUE;
}
