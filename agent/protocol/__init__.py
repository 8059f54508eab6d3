"""The wire contract between devices and the coordinator: one typed class per message.

    topics    every MQTT topic string, built and parsed in one place
    types     the constrained field types (ids, names, finite non-negative numbers)
    jobs      what a job asks of a device: models, architectures, a lookup table, settings
    push      a signed model push: the manifest, its chunks, the device's answers; keys
    messages  the versioned envelope of every message kind, with one ``encode`` and one
              ``decode``; ``decode`` raises nothing but ``ProtocolError``, for any bytes
    schema    the JSON Schema of every message, generated from these classes

Imported by the agent, the firmware bridge and the coordinator; it imports none of their
daemons.  docs/protocol.md renders it for people wiring fleetbench into other systems.
"""
