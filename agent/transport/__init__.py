"""Who hears about it?  The durable outbox, the MQTT link, zeroconf discovery, Home Assistant.

(What is said, the messages and their topics, is ``agent.protocol``.)
"""
