"""fleetbench agent: the on-device side (benchmarks, device state, transport)."""

__version__ = "0.1.0"
