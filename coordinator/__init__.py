"""fleetbench coordinator: fleet-wide ranking of architectures (and, later, the fleet service)."""
