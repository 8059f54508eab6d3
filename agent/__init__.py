"""fleetbench agent: the on-device side, and the kernel every fleetbench package shares.

common      the shared kernel: errors, atomic files, configuration, argument types, sd_notify
protocol    the wire contract: every message as a typed class, topics, the JSON Schema
device      the device daemon both the agent and the firmware bridge are
bench       how fast is this model here?      collectors  what state is the device in?
transport   who hears about it? (the outbox, the MQTT link, zeroconf, Home Assistant)
materialize search-space architectures as models;  measure  a job's items, measured here
daemon      the agent: the device daemon for this machine;  cli  the ``fleetbench`` command
"""

__version__ = "0.1.0"
