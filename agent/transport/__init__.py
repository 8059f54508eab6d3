"""Who hears about it?  Topics, message envelopes, the durable outbox and the MQTT link."""
