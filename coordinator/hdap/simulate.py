"""A described fleet (``fleetbench hdap --simulate FLEET.json``): HDAP's planning at any scale.

FLEET.json::

    {"space": "resnet56",
     "base_lut": "resnet56-lut.csv",
     "conditions": {"healthy": {},
                    "throttled": {"conv": 1.6, "pointwise": 1.5, "depthwise": 1.5, "memory": 1.1},
                    "worn-memory": {"memory": 1.9, "pointwise": 1.3, "head": 1.2}},
     "devices": [{"id": "pi-0001", "condition": "throttled"}, ...],
     "generate": {"devices": 10000, "mix": {"healthy": 0.6, "throttled": 0.25, "worn-memory": 0.15}},
     "jitter": 0.02, "shape_noise": 0.05, "profile_noise": 0.01, "seed": 0}

``base_lut`` is a width table of the family measured on one healthy board (``fleetbench lut
--space FAMILY``), relative to this file.  A condition slows each layer kind (conv, pointwise,
depthwise, memory, head; 1 when left out) and, with ``shape_noise``, each layer shape by its own
log-normal factor (a condition does not slow every layer of a kind alike: caches, memory
bandwidth).  Devices are listed (``devices``: an id and a condition, or ``slowdown`` by kind) or
generated (``generate``: a count and the conditions' shares), and each board differs from its
condition by ``jitter`` (log-normal, per kind).  A profile is measured with ``profile_noise``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.materialize.lut import KINDS, LayerKey, kind
from coordinator.errors import CoordinatorError
from coordinator.prune.widthlut import WidthLut


class FleetFileError(CoordinatorError):
    """A FLEET.json that cannot be read or does not describe a fleet."""


class ConditionTable:
    """A condition's truth: the base table, slowed by kind and, per layer shape, by its own factor."""

    def __init__(self, base: WidthLut, slowdown: dict[str, float], shape_noise: float, salt: str) -> None:
        self.base, self.slowdown, self.shape_noise, self.salt = base, slowdown, shape_noise, salt

    def layer_ms(self, key: LayerKey) -> float:
        ms = self.base.layer_ms(key) * self.slowdown.get(kind(key), 1.0)
        if self.shape_noise:
            shape = f"{self.salt}|{key.op}|{key.size}|{key.kernel}|{key.stride}".encode()
            u = int.from_bytes(hashlib.sha256(shape).digest()[:8], "big") / 2**64
            z = math.sqrt(2) * _erfinv(2 * u - 1)
            ms *= math.exp(self.shape_noise * z)
        return ms


def _erfinv(y: float) -> float:
    from scipy.special import erfinv

    return float(erfinv(y))


@dataclass(frozen=True)
class Fleet:
    space: str
    base: WidthLut
    conditions: tuple[str, ...]
    tables: tuple[ConditionTable, ...]  # one per condition
    condition_of: np.ndarray  # (devices,) index into conditions
    factors: np.ndarray  # (devices, kinds) each board's own variation around its condition
    ids: tuple[str, ...]
    profile_noise: float
    seed: int

    @property
    def devices(self) -> int:
        return len(self.ids)


def load(path: str) -> Fleet:
    """The fleet FLEET.json describes; FleetFileError names what is wrong."""
    try:
        with open(path, encoding="utf-8") as fh:
            spec = json.load(fh)
    except OSError as err:
        raise FleetFileError(f"cannot read {path}: {err.strerror or err}") from None
    except ValueError as err:
        raise FleetFileError(f"{path} is not JSON: {err}") from None
    if not isinstance(spec, dict):
        raise FleetFileError(f"{path} must hold a JSON object (see fleetbench hdap --help)")
    return build(spec, os.path.dirname(os.path.abspath(path)), path)


def build(spec: dict[str, Any], root: str = ".", what: str = "the fleet") -> Fleet:
    def fail(text: str) -> FleetFileError:
        return FleetFileError(f"{what}: {text}")

    from agent.materialize.families import FAMILIES

    space = spec.get("space")
    if space not in FAMILIES:
        raise fail(f"space must be one of {', '.join(FAMILIES)} (got {space!r})")
    if not isinstance(spec.get("base_lut"), str):
        raise fail("base_lut must name a width table (fleetbench lut --space FAMILY -o FILE.csv)")
    base = WidthLut.read(os.path.join(root, spec["base_lut"]))
    conditions = spec.get("conditions") or {"healthy": {}}
    if not isinstance(conditions, dict):
        raise fail("conditions must map names to slowdowns by layer kind")
    for name, slow in conditions.items():
        if not isinstance(slow, dict) or any(k not in KINDS for k in slow):
            raise fail(f"condition {name!r} must map layer kinds ({', '.join(KINDS)}) to slowdowns")
        if any(not isinstance(v, (int, float)) or not 0.1 <= v <= 100 for v in slow.values()):
            raise fail(f"condition {name!r}: a slowdown must be a number from 0.1 to 100")
    names = list(conditions)
    seed = int(spec.get("seed", 0))
    rng = np.random.default_rng(seed)
    jitter = float(spec.get("jitter", 0.02))
    listed, generate = spec.get("devices"), spec.get("generate")
    ids: list[str] = []
    cond: list[int] = []
    own: list[np.ndarray] = []
    if listed:
        if not isinstance(listed, list):
            raise fail("devices must be a list of {id, condition} or {id, slowdown}")
        for i, d in enumerate(listed):
            if not isinstance(d, dict):
                raise fail(f"devices[{i}] must be an object")
            ids.append(str(d.get("id", f"device-{i:05d}")))
            if "slowdown" in d:  # a board of its own: a condition of one
                slow = d["slowdown"]
                if not isinstance(slow, dict) or any(k not in KINDS for k in slow):
                    raise fail(f"devices[{i}].slowdown must map layer kinds to slowdowns")
                conditions = {**conditions, ids[-1]: slow}
                names.append(ids[-1])
                cond.append(len(names) - 1)
            elif d.get("condition") in conditions:
                cond.append(names.index(d["condition"]))
            else:
                raise fail(
                    f"devices[{i}].condition {d.get('condition')!r} is not one of {', '.join(conditions)}"
                )
            own.append(np.exp(rng.normal(0.0, jitter, len(KINDS))))
    elif isinstance(generate, dict):
        n = generate.get("devices")
        mix = generate.get("mix") or dict.fromkeys(names, 1.0)
        if not isinstance(n, int) or not 1 <= n <= 1_000_000:
            raise fail("generate.devices must be a count from 1 to 1000000")
        if any(m not in conditions for m in mix):
            raise fail(f"generate.mix names a condition not in conditions ({', '.join(conditions)})")
        shares = np.array([float(mix.get(name, 0.0)) for name in names])
        if shares.sum() <= 0:
            raise fail("generate.mix must give some condition a share above 0")
        cond = list(rng.choice(len(names), size=n, p=shares / shares.sum()))
        ids = [f"device-{i:05d}" for i in range(n)]
        own = list(np.exp(rng.normal(0.0, jitter, (n, len(KINDS)))))
    else:
        raise fail("give devices (a list) or generate ({devices, mix})")
    shape_noise = float(spec.get("shape_noise", 0.05))
    tables = tuple(
        ConditionTable(base, dict(conditions[name]), shape_noise, f"{seed}|{name}") for name in names
    )
    return Fleet(
        space,
        base,
        tuple(names),
        tables,
        np.array(cond, int),
        np.array(own),
        tuple(ids),
        float(spec.get("profile_noise", 0.01)),
        seed,
    )
