"""A real Chromium for tests, driven over the DevTools protocol (no driver, no framework).

    with Browser() as b:
        b.open(url)                      # waits for the load event
        b.eval("document.title")         # a value from the page
        b.errors                         # console errors and uncaught exceptions so far
        b.screenshot(path)               # PNG of the viewport (full_page=True: all of it)

    with dashboard(db) as url: ...       # the coordinator's dashboard on a store, on 127.0.0.1

Chromium runs headless with its own profile directory, on 127.0.0.1, and is killed at the
end.  Debian's ``chromium`` package (``.ci/run`` installs it); without it the tests skip,
and fail under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any, Optional

import pytest

EXE = shutil.which("chromium") or shutil.which("chromium-browser")


def need_chromium() -> str:
    if EXE is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing; .ci/run installs it (apt-get install chromium)")
        pytest.skip("chromium is not installed")
    return EXE


class Browser:
    def __init__(self, width: int = 1400, height: int = 900) -> None:
        from websockets.sync.client import connect

        self.width, self.height = width, height
        self.profile = tempfile.mkdtemp(prefix="fleetbench-chromium-")
        self.proc = subprocess.Popen(
            [need_chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             f"--user-data-dir={self.profile}", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        port = self._port()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as r:
            page = next(t for t in json.loads(r.read()) if t["type"] == "page")
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024)
        self._ids = itertools.count(1)
        self.errors: list[str] = []
        self._loaded = False
        for method in ("Page.enable", "Runtime.enable", "Log.enable"):
            self.call(method)
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})  # fmt: skip

    def _port(self) -> int:
        """Chromium says where its DevTools listen on stderr: read until it does."""
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if "DevTools listening on ws://" in line:
                return int(line.split("ws://127.0.0.1:", 1)[1].split("/", 1)[0])
        raise RuntimeError(f"chromium exited ({self.proc.wait()}) without opening DevTools")

    def _event(self, msg: dict[str, Any]) -> None:
        method, params = msg.get("method"), msg.get("params") or {}
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.errors.append(
                " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            )
        elif method == "Runtime.exceptionThrown":
            self.errors.append(
                params["exceptionDetails"].get("exception", {}).get("description", "exception")
            )
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            self.errors.append(params["entry"].get("text", ""))
        elif method == "Page.loadEventFired":
            self._loaded = True

    def call(self, method: str, params: Optional[dict[str, Any]] = None, timeout_s: float = 30.0) -> Any:
        """Send a DevTools command; its result (events that arrive meanwhile are recorded)."""
        msg_id = next(self._ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout_s
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result")
            self._event(msg)

    def open(self, url: str, timeout_s: float = 30.0) -> None:
        self._loaded = False
        self.call("Page.navigate", {"url": url})
        deadline = time.monotonic() + timeout_s
        while not self._loaded:  # the load event, as DevTools reports it
            self._event(json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic()))))

    def eval(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: str, full_page: bool = False) -> str:
        """A PNG of the window, or with ``full_page`` of the whole page as wide as the window."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            height = self.eval("document.documentElement.scrollHeight")
            width = self.eval("window.innerWidth")
            params.update(
                captureBeyondViewport=True,
                clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
            )
        data = self.call("Page.captureScreenshot", params)["data"]
        with open(path, "wb") as fh:
            fh.write(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.kill()
            self.proc.wait(10)
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def dashboard(db: str) -> Iterator[str]:
    """The dashboard (``coordinator.web.app``) serving the store ``db`` on 127.0.0.1, in a thread of
    its own, without a coordinator: its address."""
    from coordinator.config import CoordinatorConfig
    from coordinator.store import open_store
    from coordinator.web.app import Dashboard, serve

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    store = open_store(db, migrate=False)
    runner = asyncio.run_coroutine_threadsafe(
        serve(Dashboard(store, CoordinatorConfig()), "127.0.0.1", 0), loop
    )
    started = runner.result(30)
    try:
        yield f"http://127.0.0.1:{started.addresses[0][1]}/"
    finally:
        asyncio.run_coroutine_threadsafe(started.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
