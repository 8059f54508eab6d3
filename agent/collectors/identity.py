"""Which device is this?  A stable id, the platform and SKU, and the accelerators present.

The id must survive reboots and reinstalls of fleetbench but never leak the raw
machine id (it is a secret on systemd hosts: machine-id(5)), so it is a short hash
of it.  SKU detection reads what each vendor provides:
  Raspberry Pi / Coral Dev Board  device-tree model ("Raspberry Pi 4 Model B Rev 1.4",
                                  "Freescale i.MX8MQ Phanbell" on the Coral Dev Board)
  Jetson                          /etc/nv_tegra_release, and the device-tree model
  Android (Termux)                getprop ro.product.manufacturer / ro.product.model
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from typing import Callable, Optional

from agent.collectors import cpu
from agent.collectors._sysfs import SysfsReader, run_helper
from agent.protocol.topics import check_device_id

# Coral USB Accelerator: before its firmware loads it enumerates as Global Unichip
# (1a6e:089a), after as Google (18d1:9302).
CORAL_USB_IDS = {("1a6e", "089a"), ("18d1", "9302")}

Getprop = Callable[[str], Optional[str]]


@dataclass(frozen=True)
class Identity:
    device_id: str
    platform: str  # "raspberry-pi", "jetson", "coral-dev-board", "android", "linux"
    sku: str  # human model name, e.g. "Raspberry Pi 4 Model B Rev 1.4"
    edgetpu: tuple[str, ...]  # "pcie:apex_0", "usb:1-1.2", ...


def _getprop(name: str) -> Optional[str]:
    return (run_helper(["getprop", name], timeout_s=5) or "").strip() or None


def _hash_id(prefix: str, secret: str) -> str:
    return f"{prefix}-{hashlib.sha256(('fleetbench:' + secret).encode()).hexdigest()[:12]}"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:24] or "device"


def edgetpu_devices(reader: SysfsReader) -> tuple[str, ...]:
    found = []
    if reader.exists("/dev/apex_0") or reader.exists("/sys/class/apex/apex_0"):
        found.append("pcie:apex_0")
    for dev in reader.glob("/sys/bus/usb/devices/*"):
        vendor, product = reader.read_text(f"{dev}/idVendor"), reader.read_text(f"{dev}/idProduct")
        if vendor and product and (vendor.lower(), product.lower()) in CORAL_USB_IDS:
            found.append(f"usb:{dev.rsplit('/', 1)[-1]}")
    return tuple(found)


def detect(
    reader: Optional[SysfsReader] = None,
    configured_id: Optional[str] = None,
    getprop: Optional[Getprop] = None,
    env: Optional[dict] = None,
) -> Identity:
    """Identify this device; every source is injectable for tests."""
    reader = reader or SysfsReader()
    env = dict(os.environ) if env is None else env
    getprop = getprop or (_getprop if reader.is_live else (lambda name: None))
    board = cpu.board_model(reader) or ""
    tegra = reader.read_text("/etc/nv_tegra_release")
    android_model = getprop("ro.product.model")
    termux = "com.termux" in env.get("PREFIX", "") or android_model is not None

    if tegra or board.startswith("NVIDIA Jetson"):
        platform = "jetson"
        sku = board or (tegra.splitlines()[0] if tegra else "NVIDIA Jetson")
    elif board.startswith("Raspberry Pi"):
        platform, sku = "raspberry-pi", board
    elif "Phanbell" in board or "Coral" in board:
        platform, sku = "coral-dev-board", "Coral Dev Board" + (f" ({board})" if board else "")
    elif termux:
        platform = "android"
        maker = getprop("ro.product.manufacturer") or ""
        sku = " ".join(p for p in (maker, android_model or "Android device") if p)
    else:
        platform = "linux"
        sku = board or cpu.cpu_model(reader) or "generic Linux"

    if configured_id:
        device_id = check_device_id(configured_id)
    else:
        secret = reader.read_text("/etc/machine-id") or reader.read_text("/var/lib/dbus/machine-id")
        if not secret and platform == "android":
            secret = getprop("ro.serialno") or getprop("ro.boot.serialno")
        if not secret:
            secret = reader.read_text("/proc/sys/kernel/random/boot_id") or "unknown"
        device_id = _hash_id(_slug(platform if platform != "linux" else sku), secret)
    return Identity(device_id=device_id, platform=platform, sku=sku, edgetpu=edgetpu_devices(reader))


# Runtimes by distribution name: found through package metadata, never imported, so
# the idle agent does not carry onnxruntime's tens of megabytes.
_RUNTIME_DISTS = {
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino"),
    "litert": ("ai-edge-litert", "tflite-runtime"),
}


@dataclass(frozen=True)
class Capabilities:
    arch: str
    cpu_model: Optional[str]
    cores_logical: Optional[int]
    cores_physical: Optional[int]
    mem_total_mb: Optional[float]
    backends: dict[str, str]  # backend name -> "distribution version"
    accelerators: tuple[str, ...]  # "edgetpu:pcie:apex_0", "edgetpu:usb:1-1.2", "jetson-gpu"


def installed_backends() -> dict[str, str]:
    from importlib import metadata

    found = {}
    for backend, dists in _RUNTIME_DISTS.items():
        for dist in dists:
            try:
                found[backend] = f"{dist} {metadata.version(dist)}"
                break
            except metadata.PackageNotFoundError:
                continue
    return found


def capabilities(reader: Optional[SysfsReader] = None, ident: Optional[Identity] = None) -> Capabilities:
    """What this device can run: CPU, memory, runtimes and accelerators."""
    import platform as _platform

    from agent.collectors import load

    reader = reader or SysfsReader()
    ident = ident or detect(reader)
    info = cpu.cpu_info(reader)
    state = load.load(reader)
    accelerators = [f"edgetpu:{dev}" for dev in ident.edgetpu]
    # The Jetson's integrated GPU: its host1x control node exists once the nvgpu driver is up.
    if reader.exists("/dev/nvhost-ctrl-gpu") or reader.exists("/dev/nvgpu/igpu0"):
        accelerators.append("jetson-gpu")
    return Capabilities(
        arch=_platform.machine() if reader.is_live else "",
        cpu_model=info.model,
        cores_logical=info.cores_logical,
        cores_physical=info.cores_physical,
        mem_total_mb=state.mem_total_mb if state else None,
        backends=installed_backends(),
        accelerators=tuple(accelerators),
    )
