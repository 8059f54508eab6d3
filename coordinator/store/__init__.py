"""The coordinator's store: devices, what they report, rollouts, decisions, dead letters.

    schema   the tables and their versioned migrations
    records  the typed, frozen records the store hands out
    ingest   storing what devices report: idempotent, and a bad message costs only itself
    store    ``Store``: every query and change the coordinator makes; ``open_store``

Only this package speaks SQL.
"""

from coordinator.store.ingest import DEAD_LETTER_BYTES, Message, ingest_all
from coordinator.store.schema import LATEST, MIGRATIONS
from coordinator.store.store import Fenced, Store, StoreError, engine_url, open_store

__all__ = [
    "DEAD_LETTER_BYTES",
    "LATEST",
    "MIGRATIONS",
    "Fenced",
    "Message",
    "Store",
    "StoreError",
    "engine_url",
    "ingest_all",
    "open_store",
]
