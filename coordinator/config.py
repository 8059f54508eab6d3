"""The coordinator's configuration: the agent's conventions, its own keys.

Precedence, lowest first: the defaults below < the TOML file (``--config``, else
``/etc/fleetbench/coordinator.toml`` if it exists) < ``FLEETBENCH_COORDINATOR_*``
variables (e.g. ``FLEETBENCH_COORDINATOR_RERANK_SAMPLES``) < command-line flags.

    db = "/var/lib/fleetbench-coordinator/fleet.sqlite"   # or postgresql://...

    [broker]
    url = "mqtt://hub.example.org"

    [rerank]
    space = "nas-bench-201"
    samples = 10                        # architectures measured on each new device
    default_budget_ms = 50

    [rerank.budgets]                    # per device id or per SKU; the device id wins
    "shed-pi-3" = 20
    "Raspberry Pi 4 Model B Rev 1.4" = 40

    [push]
    canary_fraction = 0.1
    max_failure_share = 0.2
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from agent.common.config import BrokerConfig, ConfigError, check, check_tls_files, default_state_dir, layered
from agent.common.errors import UsageError

DEFAULT_PATH = "/etc/fleetbench/coordinator.toml"
ENV_PREFIX = "FLEETBENCH_COORDINATOR_"


@dataclass(frozen=True)
class RerankConfig:
    enabled: bool = True
    space: str = "nas-bench-201"
    #: the reference latency table (CSV); empty: the bundled NAS-Bench-201 table
    reference: Optional[str] = None
    #: reference devices to leave out of it (e.g. the ones the demo simulates)
    exclude: tuple[str, ...] = ()
    #: the accuracy table (CSV) and its column; empty: the bundled NAS-Bench-201 accuracies
    accuracy: Optional[str] = None
    metric: str = "cifar10_top1"
    #: a new (or degraded) device first measures the probes of the space's cross-device
    #: predictor and gets an instant pick from the optimizer network, then samples refine it
    #: (off, or no predictor or network for the space and metric: sampling only)
    probes: bool = True
    #: the cross-device predictor and optimizer network; empty: the ones shipped for the space
    predictor: Optional[str] = None
    optimizer: Optional[str] = None
    #: architectures measured on a new device before its column is predicted
    samples: int = 10
    seed: int = 0
    #: how the device measures each sample
    format: str = "onnx"
    runs: int = 20
    #: latency budgets: device id or SKU -> ms; the device id wins, then the SKU, then the default
    budgets: dict[str, float] = field(default_factory=dict)
    default_budget_ms: Optional[float] = None
    #: decide again when a device's degradation index moved this far since its last decision
    degradation_threshold: float = 0.15
    #: give up on a sampling job after this long (the device may be busy or offline)
    job_timeout_s: float = 3600.0
    #: a chosen model the device rolls back for running over its budget is replaced by the
    #: next choice (with that measurement added) at most this many times a round
    retries: int = 2
    #: push the chosen architecture to the device, under this model name
    push: bool = True
    model_name: str = "fleetbench-model"


@dataclass(frozen=True)
class PushConfig:
    #: the Ed25519 signing key (PEM); empty: STATE_DIR/coordinator.key (made by `fleetbench keygen`)
    key_file: Optional[str] = None
    chunk_bytes: int = 64 * 1024
    #: a SKU rollout goes to this share of its devices first (at least one) ...
    canary_fraction: float = 0.1
    #: ... and stops when more than this share of the finished deployments failed
    max_failure_share: float = 0.2
    #: devices receiving at once (after the canary)
    parallel: int = 20
    #: chunk messages in flight to the broker at once
    window: int = 64
    #: resend the manifest (the device answers with what it still misses) after this long silent
    retry_s: float = 60.0
    attempts: int = 5
    smoke_runs: int = 20


@dataclass(frozen=True)
class RetentionConfig:
    #: health samples are all kept this long; older ones thin to one per device per hour (the last
    #: of each hour). Results, acks, decisions and rollouts are kept.
    health_days: float = 7.0
    #: how often the coordinator running the loops thins old health
    every_s: float = 3600.0


@dataclass(frozen=True)
class HttpConfig:
    #: serve the dashboard and /metrics on HOST:PORT; empty: not at all
    listen: Optional[str] = None
    #: the bearer token every request needs (needed when listening beyond this host)
    token: Optional[str] = None
    #: /metrics without the token for clients on this host (a local Prometheus)
    metrics_open: bool = True

    def address(self) -> tuple[str, int]:
        """(host, port) of ``listen``; ValueError if it is not HOST:PORT."""
        host, sep, port = (self.listen or "").rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(self.listen)
        return host.strip("[]"), int(port)


@dataclass(frozen=True)
class CoordinatorConfig:
    #: SQLite file or SQLAlchemy URL; empty: STATE_DIR/fleet.sqlite
    db: Optional[str] = None
    state_dir: str = ""
    client_id: str = "fleetbench-coordinator"
    #: shared-subscription group; empty: plain subscriptions (brokers without $share, e.g. amqtt)
    group: str = "coordinators"
    log_level: str = "info"
    #: how often the loops look at the store
    tick_s: float = 1.0
    #: several coordinators on one database: the loops run in the one holding the lease, renewed
    #: every tick; a holder that stops renewing (killed, paused, cut off) loses it after this long
    lease_s: float = 10.0
    #: a signed command (job, push manifest, key) is refused by its device after this long
    command_ttl_s: float = 86400.0
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    rerank: RerankConfig = field(default_factory=RerankConfig)
    push: PushConfig = field(default_factory=PushConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    source: Optional[str] = field(default=None, compare=False)

    @property
    def db_url(self) -> str:
        return self.db or os.path.join(self.state_dir, "fleet.sqlite")

    @property
    def key_file(self) -> str:
        return self.push.key_file or os.path.join(self.state_dir, "coordinator.key")

    @property
    def blob_dir(self) -> str:
        """Models being pushed, named by their sha256 (a rollout resumes from here)."""
        return os.path.join(self.state_dir, "blobs")

    def budget_ms(self, device_id: str, sku: Optional[str]) -> Optional[float]:
        budgets = self.rerank.budgets
        if device_id in budgets:
            return budgets[device_id]
        if sku and sku in budgets:
            return budgets[sku]
        return self.rerank.default_budget_ms


def validate(config: CoordinatorConfig) -> CoordinatorConfig:
    from agent.transport.mqtt import BrokerSettings
    from coordinator.ranking.spaces import SPACES

    where = f"config file {config.source!r}" if config.source else "configuration"
    if config.broker.url:
        try:
            BrokerSettings.from_url(config.broker.url)
        except UsageError as err:
            raise ConfigError(f"{where}: {err}") from None
    check_tls_files(config.broker, where)
    if config.http.listen:
        import ipaddress

        try:
            host, _ = config.http.address()
        except ValueError:
            raise ConfigError(f"{where}: http.listen {config.http.listen!r} must be HOST:PORT") from None
        try:
            local = ipaddress.ip_address(host).is_loopback
        except ValueError:
            local = host == "localhost"
        if not local and not config.http.token:
            raise ConfigError(f"{where}: http.listen {config.http.listen!r} reaches beyond this host; set "
                              "http.token (the dashboard's bearer token) first")  # fmt: skip
    r, p = config.rerank, config.push
    checks = [
        (config.broker.protocol in ("3.1.1", "5"), 'broker.protocol must be "3.1.1" or "5"'),
        (config.tick_s > 0, "tick_s must be more than 0"),
        (config.lease_s >= 3 * config.tick_s, "lease_s must be at least three times tick_s"),
        (config.retention.health_days > 0, "retention.health_days must be above 0"),
        (config.retention.every_s > 0, "retention.every_s must be above 0"),
        (config.command_ttl_s >= 60, "command_ttl_s must be at least 60"),
        (r.space in SPACES, f"rerank.space must be one of {', '.join(SPACES)}"),
        (r.format in ("onnx", "tflite"), 'rerank.format must be "onnx" or "tflite"'),
        (r.samples >= 2, "rerank.samples must be at least 2"),
        (r.runs >= 1, "rerank.runs must be at least 1"),
        (all(v > 0 for v in r.budgets.values()), "rerank.budgets must all be above 0 ms"),
        (r.default_budget_ms is None or r.default_budget_ms > 0, "rerank.default_budget_ms must be above 0"),
        (r.degradation_threshold > 0, "rerank.degradation_threshold must be above 0"),
        (r.job_timeout_s > 0, "rerank.job_timeout_s must be above 0"),
        (r.retries >= 0, "rerank.retries must be 0 or more"),
        (r.space == "nas-bench-201" or bool(r.reference),
         "rerank.reference (a latency table) is needed for spaces other than nas-bench-201"),
        (0 < p.chunk_bytes <= 64 * 1024, "push.chunk_bytes must be 1-65536"),
        (0 < p.canary_fraction <= 1, "push.canary_fraction must be above 0 and at most 1"),
        (0 <= p.max_failure_share < 1, "push.max_failure_share must be 0 or more and below 1"),
        (p.parallel >= 1 and p.window >= 1, "push.parallel and push.window must be at least 1"),
        (p.retry_s > 0 and p.attempts >= 1, "push.retry_s must be above 0 and push.attempts at least 1"),
        (1 <= p.smoke_runs <= 1000, "push.smoke_runs must be 1-1000"),
        (config.log_level.lower() in ("debug", "info", "warning", "error"),
         "log_level must be debug, info, warning or error"),
    ]  # fmt: skip
    check(where, checks)
    return config


def load(
    path: Optional[str] = None,
    env: Optional[Mapping[str, str]] = None,
    flags: Optional[Mapping[str, Any]] = None,
) -> CoordinatorConfig:
    """Defaults < file < FLEETBENCH_COORDINATOR_* < flags, validated."""
    env = dict(os.environ) if env is None else env
    base = CoordinatorConfig(state_dir=default_state_dir(env, "fleetbench-coordinator"))
    config = layered(base, path, DEFAULT_PATH, env, flags, ENV_PREFIX)
    return validate(config)
