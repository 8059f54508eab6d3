"""The coordinator's HTTP side: a read-only dashboard and Prometheus metrics.

    metrics   /metrics in Prometheus' text format (the official client library), read from
              the store and the running loops at scrape time
    app       the aiohttp application: the fleet page (live: it refreshes its table from
              /api/fleet every few seconds), a device's decisions, rollouts, dead letters;
              a bearer token (``http.token``) guards everything but /metrics on loopback

Served by ``fleetbench coordinator --http HOST:PORT`` in the coordinator's own event loop;
every store query runs in an executor, so a page never holds up the ingest.
"""
