"""What a job asks of a device, as it travels: models, architectures, a lookup table, settings.

    {"job_id": "j-42",
     "models": ["mobilenet_v2.tflite", "example:squeezenet"],
     "architectures": [{"space": "nas-bench-201", "arch": "|nor_conv_3x3~0|+|...|", "seed": 0}],
     "probe": {"space": "nas-bench-201", "archs": ["|nor_conv_3x3~0|+|...|", ...]},
     "width_lut": {"space": "resnet56", "grid": [25, 50, 75, 100]},
     "settings": {"runs": 100, "warmup_runs": 10, "threads": 1},
     "device_id": "shed-pi-3", "seq": 1764240000000000, "expires_at": 1764326400.0,
     "signature": "<base64 Ed25519 by the coordinator's key>"}

These classes check everything a job can get wrong without knowing the device: types,
ranges, unknown fields (refused: a typo must not silently change a measurement), the
same item twice.  What only the device knows (which model files it has, its own limits,
which search spaces it can build) the device checks when it turns the job into work.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

import msgspec
from msgspec import Meta

from agent.protocol.signing import Seq, Signature, canonical
from agent.protocol.types import DeviceId, ItemName, JobId, Seed, Timestamp

#: models and architectures one job may name
MAX_ITEMS = 100
MAX_LUT_SAMPLE = 500
FORMATS = ("onnx", "tflite")
BACKENDS = ("auto", "onnxruntime", "litert")

Format = Literal["onnx", "tflite"]
Seconds = Annotated[float, Meta(ge=0, le=86400)]


#: a search space's name (its key, below, must fit an item name's 400 characters)
Space = Annotated[str, Meta(pattern=r"^[^\x00-\x1f\x7f]{1,32}$", description="1-32 characters")]


#: a search-space architecture string
ArchString = Annotated[str, Meta(pattern=r"^[^\x00-\x1f\x7f]{1,300}$", description="1-300 characters")]


class ArchItem(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A search-space architecture to build on the device and time like a model."""

    space: Space
    arch: ArchString
    seed: Seed = 0
    #: None: the space's default (``agent.materialize.DEFAULTS``)
    classes: Optional[Annotated[int, Meta(ge=1, le=100_000)]] = None
    resolution: Optional[Annotated[int, Meta(ge=8, le=1024)]] = None
    format: Format = "onnx"

    @property
    def key(self) -> str:
        """The item's name in acks and results; deterministic, so retries keep their ids."""
        from agent.materialize import DEFAULTS

        default_classes, default_size = DEFAULTS.get(self.space, (0, 0))
        classes, size = self.classes or default_classes, self.resolution or default_size
        return f"{self.space}:{self.arch}:seed={self.seed}:classes={classes}:{size}px.{self.format}"


class LutItem(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Build a layer lookup table for a search space on the device (``fleetbench lut`` as a job)."""

    space: Space
    sample: Annotated[int, Meta(ge=2, le=MAX_LUT_SAMPLE)] = 30
    seed: Seed = 0
    format: Format = "onnx"

    @property
    def key(self) -> str:
        return f"lut:{self.space}:sample={self.sample}:seed={self.seed}.{self.format}"


#: a width, in percent of a prunable layer's full width
Percent = Annotated[int, Meta(ge=1, le=100)]


class WidthLutItem(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Build a width table of a prunable family on the device (``fleetbench lut --space FAMILY``):
    every layer at every ``grid`` width, checked against ``sample`` width specs on the grid."""

    space: Space
    #: candidate widths, in percent of each prunable layer's full width
    grid: Annotated[tuple[Percent, ...], Meta(min_length=1, max_length=16)] = (25, 50, 75, 100)
    sample: Annotated[int, Meta(ge=2, le=MAX_LUT_SAMPLE)] = 30
    seed: Seed = 0
    format: Format = "onnx"

    def __post_init__(self) -> None:
        if len(set(self.grid)) != len(self.grid):
            raise ValueError("width_lut.grid names the same width twice")

    @property
    def key(self) -> str:
        grid = "-".join(map(str, self.grid))
        return f"width-lut:{self.space}:grid={grid}:sample={self.sample}:seed={self.seed}.{self.format}"


class LayerProfileItem(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Time a prunable family's probe layers (``agent.materialize.lut.profile_keys``, a few per
    layer kind): the device's profile, by which HDAP groups the boards of a SKU.  Seconds."""

    space: Space
    format: Format = "onnx"

    @property
    def key(self) -> str:
        return f"layer-profile:{self.space}.{self.format}"


#: probe architectures one job may name
MAX_PROBES = 64


class ProbeItem(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Measure a search space's probe architectures: the device's features (``fleetbench probes``).

    Each is built and timed like an ``ArchItem`` (same keys, so results name them alike);
    their results say ``probe: true``, so whoever reads the broker knows what they are for."""

    space: Space
    archs: Annotated[tuple[ArchString, ...], Meta(min_length=1, max_length=MAX_PROBES)]
    seed: Seed = 0
    format: Format = "onnx"

    def __post_init__(self) -> None:
        if len(set(self.archs)) != len(self.archs):
            raise ValueError("probe.archs names the same architecture twice")

    @property
    def architectures(self) -> tuple[ArchItem, ...]:
        return tuple(ArchItem(space=self.space, arch=a, seed=self.seed, format=self.format)
                     for a in self.archs)  # fmt: skip


class JobSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """How to measure; a setting left out is the device's default (its ``BenchSettings``)."""

    backend: Optional[Literal["auto", "onnxruntime", "litert"]] = None
    threads: Optional[Annotated[int, Meta(ge=1, le=1024)]] = None
    runs: Optional[Annotated[int, Meta(ge=1, le=1_000_000)]] = None
    warmup_runs: Optional[Annotated[int, Meta(ge=0, le=1_000_000)]] = None
    warmup_time_s: Optional[Seconds] = None
    min_time_s: Optional[Seconds] = None
    max_time_s: Optional[Annotated[float, Meta(gt=0, le=86400)]] = None
    seed: Optional[Seed] = None

    def __post_init__(self) -> None:
        if self.max_time_s is not None and self.max_time_s < (self.min_time_s or 0.0):
            raise ValueError("settings.max_time_s is shorter than settings.min_time_s")

    def given(self) -> dict[str, object]:
        """The settings the job names (the rest stay the device's defaults)."""
        return {k: v for k, v in msgspec.structs.asdict(self).items() if v is not None}


class JobSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    job_id: JobId
    models: tuple[ItemName, ...] = ()
    architectures: tuple[ArchItem, ...] = ()
    lut: Optional[LutItem] = None
    #: a prunable family's width table (absent from older coordinators' jobs)
    width_lut: Optional[WidthLutItem] = None
    #: a prunable family's probe layers: the device's profile for HDAP (absent from older jobs)
    layer_profile: Optional[LayerProfileItem] = None
    #: the device's features: probe architectures (absent from older coordinators' jobs; a
    #: device older than it refuses the job, as an unknown field, and says so in its ack)
    probe: Optional[ProbeItem] = None
    settings: JobSettings = JobSettings()
    #: the seal (agent.protocol.signing): the one device it is for, its sequence number, its
    #: expiry, the coordinator's signature; a device that pins a key refuses a job without it
    device_id: Optional[DeviceId] = None
    seq: Optional[Seq] = None
    expires_at: Optional[Timestamp] = None
    signature: Optional[Signature] = None

    def signed_bytes(self) -> bytes:
        return canonical(self)

    def __post_init__(self) -> None:
        total = len(self.models) + len(self.architectures)
        if total == 0 and not self.tables and self.probe is None:
            raise ValueError(
                "a job needs at least one model, architecture, lut, width_lut, layer_profile or probe"
            )
        if total > MAX_ITEMS:
            raise ValueError(f"a job may name at most {MAX_ITEMS} models and architectures (got {total})")
        if len(set(self.items)) != len(self.items):
            raise ValueError("the job names the same model or architecture twice")

    @property
    def items(self) -> tuple[str, ...]:
        """Everything the job measures, by name: model paths, architecture keys, the tables."""
        archs = tuple(a.key for a in self.all_architectures)
        return self.models + archs + tuple(t.key for t in self.tables)

    @property
    def tables(self) -> tuple[Union[LutItem, WidthLutItem, LayerProfileItem], ...]:
        """The lookup tables the job builds (a profile is a small one)."""
        return tuple(t for t in (self.lut, self.width_lut, self.layer_profile) if t is not None)

    def table(self, key: str) -> Optional[Union[LutItem, WidthLutItem, LayerProfileItem]]:
        return next((t for t in self.tables if t.key == key), None)

    @property
    def all_architectures(self) -> tuple[ArchItem, ...]:
        """The architectures to build and time: those named, then the probes."""
        return self.architectures + (self.probe.architectures if self.probe else ())

    def architecture(self, key: str) -> Optional[ArchItem]:
        return next((a for a in self.all_architectures if a.key == key), None)

    def is_probe(self, key: str) -> bool:
        return self.probe is not None and any(a.key == key for a in self.probe.architectures)
