"""The dashboard: server-rendered pages (Jinja2, autoescaped: device names and SKUs come from
devices), one small inline script that keeps a page's live part current (no reload), no CDN.

    /                 the fleet: state, SKU, last seen, health, degradation, results, refused,
                      the key each device checks; filter (?q=) and pages (?page=) for big fleets
    /api/fleet        the same rows as JSON, for tools
    /devices/{id}     a device: its record and its decisions, with why (``fleetbench explain``)
    /decisions        each device's newest decision: the chosen model's latency when chosen
                      (measured or predicted) against its smoke run, on log axes and as a table
    /rollouts         rollouts and their deployments
    /dead-letters     the newest messages refused, and why
    /metrics          Prometheus (see ``coordinator.web.metrics``)

Read-only.  With ``http.token`` set, every request needs it (``Authorization: Bearer``, or
``?token=`` once, which sets a cookie); ``/metrics`` stays open to loopback clients when
``http.metrics_open``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import ipaddress
import math
import time
from typing import Any, Callable, Optional

import jinja2
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agent.common.args import ago
from coordinator.web.metrics import registry

PAGE_SIZE = 100
COOKIE = "fleetbench_token"
_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("coordinator.web", "templates"),
    autoescape=jinja2.select_autoescape(default=True),
)


def fleet_rows(devices: list[Any], now: float, q: str = "", page: int = 1) -> dict[str, Any]:
    """The fleet table's rows (filtered by ``q`` on id, SKU and state; one page of them)."""
    q = q.strip().lower()
    chosen = [d for d in devices if not q or q in d.device_id.lower() or q in (d.sku or "").lower()
              or q == d.state]  # fmt: skip
    pages = max(1, -(-len(chosen) // PAGE_SIZE))
    page = min(max(page, 1), pages)
    rows = []
    for d in chosen[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]:
        health = (d.health or {}).get("health") or {}
        temps = ((health.get("thermal") or {}).get("temperatures_c") or {}).values()
        rows.append({
            "device": d.device_id, "kind": d.kind, "state": d.state, "sku": d.sku or "?",
            "seen": ago(now - d.last_seen) + " ago",
            "hottest_c": f"{max(temps):.1f}" if temps else "-",
            "degradation": f"{d.degradation_index:.3f}" if d.degradation_index is not None else "-",
            "results": d.results, "refused": d.dead_letters, "key": d.key[:8] if d.key else "unsigned",
        })  # fmt: skip
    online = sum(d.state == "online" for d in devices)
    return {"rows": rows, "page": page, "pages": pages, "shown": len(chosen), "total": len(devices),
            "online": online, "q": q}  # fmt: skip


def trend_svg(
    points: list[tuple[float, float]], width: int = 640, height: int = 120
) -> Optional[dict[str, Any]]:
    """The degradation index over time as an SVG polyline's points (server-side: no plotting
    library in the page); None with fewer than two samples.

    >>> trend_svg([(0.0, 1.0), (10.0, 1.1)], 100, 50)["points"]
    '4.0,46.0 96.0,4.0'
    """
    if len(points) < 2:
        return None
    t0, t1 = points[0][0], points[-1][0]
    lo, hi = min(v for _, v in points), max(v for _, v in points)
    span_t, span_v, pad = (t1 - t0) or 1.0, (hi - lo) or 1.0, 4.0
    xy = [(pad + (t - t0) / span_t * (width - 2 * pad), height - pad - (v - lo) / span_v * (height - 2 * pad))
          for t, v in points]  # fmt: skip
    return {"points": " ".join(f"{x:.1f},{y:.1f}" for x, y in xy), "width": width, "height": height,
            "low": lo, "high": hi, "first": points[0][1], "last": points[-1][1], "n": len(points),
            "days": (t1 - t0) / 86400}  # fmt: skip


#: ``budget_verdict``'s kinds, said of devices
VERDICTS = {"yes": "within budget", "NO": "over budget", "within": "within the noise of their budget",
            "-": "not measured yet"}  # fmt: skip


def decision_rows(decisions: list[Any], now: float, q: str = "", page: int = 1) -> dict[str, Any]:
    """The decisions page: each device's newest decision, the chosen model's latency when chosen
    (measured or predicted) against its smoke run on the device, filtered and paged as the fleet."""
    from coordinator.cli.format import basis, decision_verdict, interval

    q = q.strip().lower()
    chosen = [d for d in decisions if not q or q in d.device_id.lower() or q in (d.arch or "").lower()]
    pages = max(1, -(-len(chosen) // PAGE_SIZE))
    page = min(max(page, 1), pages)
    verdicts: dict[str, int] = {}
    points = []
    rows = []
    for i, d in enumerate(chosen):
        dep = d.deployment
        p50 = dep.p50_ms if dep else None
        kind, verdict = decision_verdict(d)
        verdicts[VERDICTS[kind]] = verdicts.get(VERDICTS[kind], 0) + 1
        how = basis(d)
        if d.predicted_ms and p50:
            label = f"{d.device_id}: {how} {d.predicted_ms:.2f} ms, smoke run {p50:.2f} ms"
            points.append({"x": d.predicted_ms, "y": p50, "label": label, "cls": kind})
        if (page - 1) * PAGE_SIZE <= i < page * PAGE_SIZE:
            rows.append({
                "device": d.device_id, "budget": f"{d.budget_ms:.2f}", "arch": d.arch or "nothing fits",
                "expected": f"{d.predicted_ms:.2f}" if d.predicted_ms else "-", "basis": how or "",
                "smoke": f"{p50:.2f}" if p50 else "-",
                "interval": interval(dep, 2) if dep else "",
                "verdict": verdict, "state": dep.state if dep else "-", "retry": d.inputs.get("retry") or 0,
                "when": ago(now - d.at) + " ago",
            })  # fmt: skip
    return {"rows": rows, "page": page, "pages": pages, "shown": len(chosen), "total": len(decisions),
            "q": q, "verdicts": [(n, v) for v, n in verdicts.items()],
            "plot": loglog_svg(points)}  # fmt: skip


def loglog_svg(points: list[dict[str, Any]], width: int = 560, height: int = 420) -> Optional[dict[str, Any]]:
    """Expected against measured latency on log axes (devices a hundred times apart stay
    apart), the same range on both so the diagonal is "as expected": an SVG's parts, drawn
    server-side.  ``points``: x, y (ms), label (the tooltip), cls (the dot's class).

    >>> svg = loglog_svg([{"x": 1.0, "y": 1.0, "label": "a", "cls": "yes"},
    ...                   {"x": 40.0, "y": 44.0, "label": "b", "cls": "NO"}])
    >>> [t["label"] for t in svg["xticks"]]
    ['1', '2', '5', '10', '20', '50']
    """
    values = [v for p in points for v in (p["x"], p["y"]) if v > 0]
    if not values:
        return None
    lo, hi = min(values) / 1.3, max(values) * 1.3
    left, right, top, bottom = 56, 12, 12, 44
    span = math.log(hi) - math.log(lo)

    def at(v: float, size: int, a: int, b: int, flip: bool = False) -> float:
        f = (math.log(v) - math.log(lo)) / span
        return (size - b - f * (size - a - b)) if flip else (a + f * (size - a - b))

    ticks = [m * 10.0**e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
             for m in (1, 2, 5) if lo <= m * 10.0**e <= hi]  # fmt: skip
    return {
        "width": width, "height": height, "left": left, "top": top,
        "right": width - right, "bottom": height - bottom,
        "dots": [{"cx": f"{at(p['x'], width, left, right):.1f}",
                  "cy": f"{at(p['y'], height, top, bottom, True):.1f}", "label": p["label"], "cls": p["cls"]}
                 for p in points if p["x"] > 0 and p["y"] > 0],
        "xticks": [{"pos": f"{at(t, width, left, right):.1f}", "label": f"{t:g}"} for t in ticks],
        "yticks": [{"pos": f"{at(t, height, top, bottom, True):.1f}", "label": f"{t:g}"} for t in ticks],
        "diagonal": (f"{left}", f"{height - bottom}", f"{width - right}", f"{top}"),
    }  # fmt: skip


class Dashboard:
    def __init__(self, store: Any, config: Any, coordinator: Optional[Any] = None,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.store, self.config, self.clock = store, config, clock
        self.registry = registry(store, coordinator)

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A store query in an executor: the coordinator's loop keeps ingesting meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.add_routes([
            web.get("/", self.fleet), web.get("/api/fleet", self.fleet_json),
            web.get("/devices/{device_id}", self.device), web.get("/rollouts", self.rollouts),
            web.get("/decisions", self.decisions), web.get("/dead-letters", self.dead_letters),
            web.get("/metrics", self.metrics),
        ])  # fmt: skip
        return app

    # -- access ------------------------------------------------------------------------

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        token = self.config.http.token
        if not token or (request.path == "/metrics" and self.config.http.metrics_open and _loopback(request)):
            return await handler(request)
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        given = given or request.cookies.get(COOKIE, "") or request.query.get("token", "")
        if not hmac.compare_digest(given.encode(), token.encode()):
            why = "a token is needed: Authorization: Bearer TOKEN, or ?token=TOKEN\n"
            raise web.HTTPUnauthorized(text=why, headers={"WWW-Authenticate": "Bearer"})
        response = await handler(request)
        if request.query.get("token"):  # once in the address bar, then a cookie
            response.set_cookie(COOKIE, token, httponly=True, samesite="Strict")
        return response

    # -- pages -------------------------------------------------------------------------

    def _page(self, name: str, **context: Any) -> web.Response:
        html = _ENV.get_template(name).render(**context, now=time.strftime("%Y-%m-%d %H:%M:%S"))
        return web.Response(text=html, content_type="text/html")

    def _query(self, request: web.Request) -> tuple[str, int]:
        try:
            page = int(request.query.get("page", "1"))
        except ValueError:
            raise web.HTTPBadRequest(
                text=f"page {request.query.get('page')!r} is not a whole number\n"
            ) from None
        return request.query.get("q", ""), page

    async def fleet(self, request: web.Request) -> web.Response:
        q, page = self._query(request)
        devices = await self._call(self.store.fleet)
        return self._page("fleet.html", **fleet_rows(devices, self.clock(), q, page))

    async def fleet_json(self, request: web.Request) -> web.Response:
        q, page = self._query(request)
        devices = await self._call(self.store.fleet)
        return web.json_response(fleet_rows(devices, self.clock(), q, page))

    async def device(self, request: web.Request) -> web.Response:
        from coordinator.cli.format import describe

        device_id = request.match_info["device_id"]
        devices = {d.device_id: d for d in await self._call(self.store.fleet)}
        if device_id not in devices:
            raise web.HTTPNotFound(text=f"no device {device_id!r} in the fleet\n")
        decisions = await self._call(self.store.decisions, device_id)
        history = await self._call(self.store.degradation_history, device_id)
        return self._page("device.html", device=dataclasses.asdict(devices[device_id]),
                          decisions=[describe(d) for d in decisions], trend=trend_svg(history))  # fmt: skip

    async def decisions(self, request: web.Request) -> web.Response:
        q, page = self._query(request)
        found = await self._call(self.store.latest_decisions)
        return self._page("decisions.html", **decision_rows(found, self.clock(), q, page))

    async def rollouts(self, request: web.Request) -> web.Response:
        return self._page("rollouts.html", reports=await self._call(self.store.rollout_report, None))

    async def dead_letters(self, request: web.Request) -> web.Response:
        letters = await self._call(self.store.dead_letters, 200)
        return self._page(
            "dead_letters.html", letters=letters, total=await self._call(self.store.count, "dead_letters")
        )

    async def metrics(self, request: web.Request) -> web.Response:
        body = await self._call(generate_latest, self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _loopback(request: web.Request) -> bool:
    try:
        return ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        return False


async def serve(dashboard: Dashboard, host: str, port: int) -> web.AppRunner:
    """Start serving (in the running loop); the runner, to ``cleanup()`` at the end."""
    runner = web.AppRunner(dashboard.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
