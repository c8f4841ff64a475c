package io.anonstream.peer;

import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.ObjectReader;
import java.io.IOException;
import org.apache.kafka.common.serialization.Deserializer;

/** JSON bytes to an {@link Event} with Jackson; bad input becomes {@link Event#BAD}. */
public final class EventDeserializer implements Deserializer<Event> {
    private static final ObjectReader READER =
            new ObjectMapper()
                    .disable(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES)
                    .readerFor(Event.class);

    @Override
    public Event deserialize(String topic, byte[] data) {
        if (data == null) {
            return Event.BAD;
        }
        try {
            Event event = READER.readValue(data);
            return event == null ? Event.BAD : event;
        } catch (IOException | RuntimeException e) {
            // Jackson's messages quote the input: nothing of it goes to a log.
            return Event.BAD;
        }
    }
}
