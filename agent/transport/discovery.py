"""Zeroconf (mDNS/DNS-SD): agents advertise themselves, and find peers and MQTT brokers.

Each agent advertises ``_fleetbench._tcp`` with TXT records a person or the
coordinator can read without connecting: id, sku, platform, version, backends.
An agent with no broker configured browses ``_secure-mqtt._tcp`` and connects over TLS,
checking the broker's certificate against ``broker.ca_file``: anyone on a LAN can
announce a broker, and a plain one would receive everything the device says.  Only an
operator who allows it (``discovery.allow_plain``) gets the first plain ``_mqtt._tcp``
(what mosquitto's Avahi service file and Home Assistant's add-on announce).

Interfaces are configurable: an empty list means every interface; the tests bind
to 127.0.0.1 only, which mDNS over loopback supports.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from agent.common.errors import FleetbenchError, UsageError

logger = logging.getLogger(__name__)

FLEETBENCH = "_fleetbench._tcp.local."
MQTT = "_mqtt._tcp.local."
MQTTS = "_secure-mqtt._tcp.local."
_TXT_MAX = 200  # a TXT string is at most 255 bytes with its key; keep well inside


@dataclass(frozen=True)
class Peer:
    service: str  # FLEETBENCH, MQTT or MQTTS
    name: str  # instance name, e.g. "rpi4-shed-03"
    addresses: tuple[str, ...]
    port: int
    properties: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        host = self.addresses[0] if self.addresses else self.name
        return f"{'mqtts' if self.service == MQTTS else 'mqtt'}://{host}:{self.port}"


class DiscoveryError(FleetbenchError):
    """Zeroconf cannot run on the interfaces asked for."""


def check_interface(text: str) -> str:
    """An interface address as zeroconf takes it (IPv4 or IPv6), else a UsageError.

    >>> check_interface("127.0.0.1")
    '127.0.0.1'
    """
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise UsageError(
            f"interface {text!r} is not an IP address (e.g. 127.0.0.1 or 192.168.1.20)"
        ) from None
    return text


def _zeroconf(interfaces: Sequence[str]) -> Any:
    from zeroconf import InterfaceChoice
    from zeroconf.asyncio import AsyncZeroconf

    for address in interfaces:
        check_interface(address)
    try:
        return AsyncZeroconf(interfaces=list(interfaces) if interfaces else InterfaceChoice.All)
    except OSError as err:
        where = ", ".join(interfaces) or "any interface"
        raise DiscoveryError(f"zeroconf cannot listen on {where}: {err.strerror or err}") from err


def _local_addresses(interfaces: Sequence[str]) -> list[str]:
    if interfaces:
        return [i for i in interfaces if _is_ipv4(i)]
    import ifaddr  # zeroconf's own dependency

    found = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and not ip.ip.startswith("127."):
                found.append(ip.ip)
    return found or ["127.0.0.1"]


def _is_ipv4(text: str) -> bool:
    try:
        socket.inet_aton(text)
    except OSError:
        return False
    return text.count(".") == 3


def _txt(properties: dict[str, str]) -> dict[str, str]:
    return {k: str(v)[:_TXT_MAX] for k, v in properties.items() if v is not None}


class Advertiser:
    """Announces this agent on the LAN for as long as it runs (asyncio)."""

    def __init__(self, device_id: str, properties: dict[str, str], interfaces: Sequence[str] = ()) -> None:
        self.device_id = device_id
        self.properties = _txt(properties)
        self.interfaces = tuple(interfaces)
        self._aiozc: Any = None
        self._info: Any = None

    async def start(self) -> None:
        from zeroconf import ServiceInfo

        self._aiozc = _zeroconf(self.interfaces)
        self._info = ServiceInfo(
            FLEETBENCH,
            f"{self.device_id}.{FLEETBENCH}",
            addresses=[socket.inet_aton(a) for a in _local_addresses(self.interfaces)],
            port=0,  # the agent listens on nothing: it talks through the broker
            properties=self.properties,
            server=f"{self.device_id}.local.",
        )
        await self._aiozc.async_register_service(self._info, allow_name_change=True)
        logger.info("advertising %s on %s", self._info.name, ", ".join(self.interfaces) or "all interfaces")

    async def stop(self) -> None:
        if self._aiozc is None:
            return
        try:
            if self._info is not None:
                await self._aiozc.async_unregister_service(self._info)
        finally:
            await self._aiozc.async_close()
            self._aiozc = None


async def browse(
    services: Sequence[str] = (FLEETBENCH, MQTT),
    timeout_s: float = 3.0,
    interfaces: Sequence[str] = (),
    first: bool = False,
) -> list[Peer]:
    """Everything announcing ``services`` within ``timeout_s`` (or the first one, if ``first``)."""
    from zeroconf import ServiceStateChange
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo

    aiozc = _zeroconf(interfaces)
    found: dict[tuple[str, str], Peer] = {}
    names: asyncio.Queue = asyncio.Queue()

    def on_change(zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        if state_change is not ServiceStateChange.Removed:
            names.put_nowait((service_type, name))

    browser = AsyncServiceBrowser(aiozc.zeroconf, list(services), handlers=[on_change])
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                service_type, name = await asyncio.wait_for(names.get(), remaining)
            except asyncio.TimeoutError:
                break
            if (service_type, name) in found:
                continue
            info = AsyncServiceInfo(service_type, name)
            if not await info.async_request(aiozc.zeroconf, 3000):
                continue
            props = {
                k.decode("utf-8", "replace"): (v or b"").decode("utf-8", "replace")
                for k, v in (info.properties or {}).items()
            }
            instance = name[: -len(service_type) - 1] if name.endswith("." + service_type) else name
            found[(service_type, name)] = Peer(
                service_type, instance, tuple(info.parsed_addresses()), info.port or 0, props
            )
            if first:
                break
    finally:
        await browser.async_cancel()
        await aiozc.async_close()
    return sorted(found.values(), key=lambda p: (p.service, p.name))


async def find_broker(
    timeout_s: float, interfaces: Sequence[str] = (), services: Sequence[str] = (MQTT,)
) -> Optional[Peer]:
    peers = await browse(tuple(services), timeout_s, interfaces, first=True)
    return peers[0] if peers else None


#: how often a daemon with no broker configured looks for one again
BROKER_SEARCH_S = 60.0


async def search_broker(
    interfaces: Sequence[str],
    sleep: Callable[[float], Awaitable[bool]],
    retry_s: float = BROKER_SEARCH_S,
    tls: bool = False,
    allow_plain: bool = False,
) -> Optional[str]:
    """Look for an MQTT broker on the LAN until one answers: its URL.  Over TLS (``tls``: a
    CA to check it against is configured) and, if ``allow_plain``, plain.  None if neither
    is allowed, if ``sleep`` (a daemon's stoppable sleep) says it is stopping, or if zeroconf
    cannot run here."""
    services = ((MQTTS,) if tls else ()) + ((MQTT,) if allow_plain else ())
    if not services:
        logger.error("no broker configured (broker.url); a discovered one is used only over TLS, "
                     "with broker.ca_file to check it, or with discovery.allow_plain = true")  # fmt: skip
        return None
    while True:
        try:
            peer = await find_broker(5.0, interfaces, services)
        except DiscoveryError as err:
            logger.error("no broker configured, and %s; set broker.url", err)
            return None
        if peer is not None:
            logger.info("found broker %s (%s) on the LAN", peer.name, peer.url)
            return peer.url
        logger.warning("no broker configured and none announced (%s); results wait in the outbox",
                       " or ".join(s.split(".")[0] + "._tcp" for s in services))  # fmt: skip
        if await sleep(retry_s):
            return None
