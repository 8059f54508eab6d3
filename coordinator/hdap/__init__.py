"""HDAP: homogeneous-device aware pruning for a SKU whose boards have drifted apart.

``cluster`` (profiles -> clusters and representatives), ``fleetmodel`` (every device's latency
from a few tables), ``search`` (the fleet-aware width search), ``planning`` (the pipeline, for a
real or a simulated fleet) and ``simulate`` (FLEET.json).
"""

#: a device within this RMS log slowdown of its representative is described well enough by it
TOL = 0.05
#: at most this share of a SKU's devices are asked for a full width table
MAX_SHARE = 0.3
