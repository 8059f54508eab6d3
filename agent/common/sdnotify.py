"""The systemd notify protocol, by hand (sd_notify(3)): a datagram to $NOTIFY_SOCKET.

READY=1 once the daemon is really up, WATCHDOG=1 while its loop is healthy,
STOPPING=1 on the way out, STATUS=... for ``systemctl status``.  Outside systemd
(no NOTIFY_SOCKET) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from typing import Optional

logger = logging.getLogger(__name__)


class Notifier:
    def __init__(self, env: Optional[Mapping[str, str]] = None) -> None:
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET", "")
        # "@name" is a Linux abstract socket: the leading "@" stands for a NUL byte.
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self._sock: Optional[socket.socket] = None
        self.watchdog_s: Optional[float] = None
        usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
        if usec and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1e6

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, *lines: str) -> bool:
        if not self.address:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # Never block the event loop on a notify socket nobody reads (a supervisor that
                # stopped reading, a test harness): its queue fills after a few hundred pings, and
                # a blocking sendto would freeze the whole daemon.  A ping lost is only a ping.
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(lines).encode(), self.address)
            return True
        except OSError as err:
            logger.debug("sd_notify %s failed: %s", lines, err)
            return False

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def reloading(self) -> bool:
        return self.notify("RELOADING=1")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
