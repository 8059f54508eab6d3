"""HDAP: homogeneous-device aware pruning for a SKU whose boards have drifted apart.

``cluster`` (profiles -> clusters and representatives), ``fleetmodel`` (every device's latency
from a few tables), ``search`` (the fleet-aware width search), ``planning`` (the pipeline, for a
real or a simulated fleet) and ``simulate`` (FLEET.json).
"""
