"""Serial ports on this host, with the USB ids that say which board hangs where.

pyserial's ``list_ports`` reads them from sysfs; the stable ``/dev/serial/by-id/...``
links are listed with the port they point to, since those are the names a systemd
template unit should be given (``ttyACM0`` changes with plug-in order, by-id does not).
"""

from __future__ import annotations

import os
from typing import Any, Optional


def describe(info: Any) -> dict[str, Any]:
    """One ``ListPortInfo`` as plain data (USB ids as 4-digit hex, like lsusb)."""
    usb = info.vid is not None
    return {
        "device": info.device,
        "description": info.description if info.description and info.description != "n/a" else None,
        "usb": f"{info.vid:04x}:{info.pid:04x}" if usb else None,
        "serial_number": info.serial_number,
        "manufacturer": info.manufacturer,
        "product": info.product,
        "location": info.location,
        "hwid": info.hwid if info.hwid and info.hwid != "n/a" else None,
    }


def by_id_links(directory: str = "/dev/serial/by-id") -> dict[str, str]:
    """Real device path -> its stable by-id link."""
    links: dict[str, str] = {}
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return links
    for name in names:
        path = os.path.join(directory, name)
        links.setdefault(os.path.realpath(path), path)
    return links


def list_ports() -> list[dict[str, Any]]:
    """Every serial port pyserial finds here, USB ones first, each with its by-id link."""
    from serial.tools import list_ports as lp

    links = by_id_links()
    ports = []
    for info in lp.comports():
        item = describe(info)
        item["by_id"] = links.get(os.path.realpath(info.device))
        ports.append(item)
    ports.sort(key=lambda p: (p["usb"] is None, p["device"]))
    return ports


def usb_info(port: str) -> Optional[dict[str, Any]]:
    """The USB ids of ``port`` (a path or by-id link), None for URLs and non-USB ports."""
    if "://" in port:
        return None
    try:
        from serial.tools import list_ports as lp

        real = os.path.realpath(port)
        for info in lp.comports():
            if os.path.realpath(info.device) == real and info.vid is not None:
                d = describe(info)
                return {k: d[k] for k in ("usb", "serial_number", "manufacturer", "product")}
    except (OSError, ImportError):
        return None
    return None
