"""The agent's configuration: TOML into frozen dataclasses, validated once at start.

Precedence, lowest first: the defaults below < the TOML file (``--config``, else
``/etc/fleetbench/agent.toml`` if it exists) < environment variables < command-line
flags.  Every key has an environment name: ``FLEETBENCH_`` + the section and key in
capitals, e.g. ``FLEETBENCH_DEVICE_ID``, ``FLEETBENCH_BROKER_URL``,
``FLEETBENCH_JOBS_MAX_TEMPERATURE_C``.

    device_id = "shed-pi-3"            # default: a hash of /etc/machine-id
    state_dir = "/var/lib/fleetbench"  # outbox, baseline, status, model store

    [broker]
    url = "mqtts://hub.example.org"     # none: look for _mqtt._tcp on the LAN
    ca_file = "/etc/fleetbench/ca.pem"

    [jobs]
    max_temperature_c = 75

The configuration is data: nothing in it is executed, and it is passed down from
the daemon, never read from a global.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

from agent.common.config import BrokerConfig, ConfigError, check, check_tls_files, default_state_dir, layered
from agent.common.errors import UsageError

DEFAULT_PATH = "/etc/fleetbench/agent.toml"
#: StateDirectory= of systemd/fleetbench-agent.service, and root's default
SERVICE_STATE_DIR = "/var/lib/fleetbench"


@dataclass(frozen=True)
class HealthConfig:
    interval_s: float = 60.0


@dataclass(frozen=True)
class OutboxConfig:
    max_messages: int = 100_000
    max_age_days: float = 7.0
    #: the payload bytes it holds at most (health samples go first, then the oldest results)
    max_bytes: int = 256 * 1024 * 1024


@dataclass(frozen=True)
class DegradationConfig:
    enabled: bool = True
    #: time the reference workload this often (and at first start)
    interval_s: float = 6 * 3600.0
    #: only when the 1-minute load per core is below this ...
    max_load_per_core: float = 0.3
    #: ... and the hottest sensor is below this, so the probe neither disturbs nor is disturbed
    max_temperature_c: float = 65.0


@dataclass(frozen=True)
class JobsConfig:
    #: models a job may name live here (default: STATE_DIR/models)
    model_dir: Optional[str] = None
    #: a job waits while the hottest sensor is above this ...
    max_temperature_c: float = 80.0
    #: ... or while on battery below this share
    min_battery_percent: float = 20.0
    #: and fails if the device does not get there within this long
    max_wait_s: float = 3600.0
    #: refuse jobs asking for more measured runs or more seconds per model than this
    max_runs: int = 100_000
    max_time_s: float = 600.0
    #: ... more warm-up runs, or more threads (0: the device's logical cores)
    max_warmup_runs: int = 10_000
    max_threads: int = 0
    #: a job's device-time budget: refused if its items could take longer (each item's
    #: max_time_s and warm-up, plus building), and failed if it runs over
    max_job_s: float = 4 * 3600.0
    #: jobs accepted and waiting; when one more comes, the oldest waiting is dropped (acked
    #: "rejected" with the reason)
    max_waiting: int = 20
    #: an architecture whose weights are larger than this is not built
    max_model_bytes: int = 256 * 1024 * 1024
    #: built architectures kept for the next job; the least recently used go first
    cache_bytes: int = 1024 * 1024 * 1024
    #: take jobs and pushes nobody signed, when no key is pinned: for a lab on a network you
    #: trust, never a fleet (anyone who can publish to the broker commands the device)
    allow_unsigned: bool = False


@dataclass(frozen=True)
class DiscoveryConfig:
    enabled: bool = True
    #: addresses to advertise and browse on (default: all); tests use ["127.0.0.1"]
    interfaces: tuple[str, ...] = ()
    #: with no broker.url, use a broker announced as plain _mqtt._tcp (anyone on the LAN can
    #: announce one); without this, only _secure-mqtt._tcp over TLS with broker.ca_file
    allow_plain: bool = False


@dataclass(frozen=True)
class ModelsConfig:
    #: the coordinator's public key, "ed25519:<base64>" (`fleetbench keygen --show` prints it);
    #: jobs and pushes are accepted only when signed by it, and refused while it is unset
    #: (unless jobs.allow_unsigned)
    public_key: Optional[str] = None
    #: refuse a pushed model larger than this
    max_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class HomeAssistantConfig:
    enabled: bool = False
    prefix: str = "homeassistant"


@dataclass(frozen=True)
class DeviceConfig:
    """What every device daemon has (the agent, and the firmware bridge for a board)."""

    device_id: Optional[str] = None
    state_dir: str = ""  # filled by load(): see default_state_dir
    log_level: str = "info"
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    jobs: JobsConfig = field(default_factory=JobsConfig)
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    #: the coordinator's key (both daemons check jobs with it; the agent pushes too)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    #: where the file came from, for messages and SIGHUP (not a key in the file)
    source: Optional[str] = field(default=None, compare=False)

    @property
    def model_dir(self) -> str:
        return self.jobs.model_dir or os.path.join(self.state_dir, "models")

    def replace(self, **changes: Any) -> Any:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class AgentConfig(DeviceConfig):
    degradation: DegradationConfig = field(default_factory=DegradationConfig)
    homeassistant: HomeAssistantConfig = field(default_factory=HomeAssistantConfig)

    #: the firmware bridge reads the same file and owns its [bridge] section
    FOREIGN_SECTIONS: ClassVar[tuple[str, ...]] = ("bridge",)

    def replace(self, **changes: Any) -> AgentConfig:
        return dataclasses.replace(self, **changes)


def validate_device(config: DeviceConfig) -> None:
    """The checks of the sections every device daemon shares."""
    from agent.protocol.topics import check_device_id
    from agent.transport.discovery import check_interface
    from agent.transport.mqtt import BrokerSettings

    where = config.source or "configuration"
    for address in config.discovery.interfaces:
        try:
            check_interface(address)
        except UsageError as err:
            raise ConfigError(f"{where}: discovery.interfaces: {err}") from None
    if config.device_id is not None:
        try:
            check_device_id(config.device_id)
        except UsageError as err:
            raise ConfigError(f"{where}: {err}") from None
    if config.broker.url:
        try:
            BrokerSettings.from_url(config.broker.url)
        except UsageError as err:
            raise ConfigError(f"{where}: {err}") from None
    check_tls_files(config.broker, where)
    if config.models.public_key:
        from agent.protocol.signing import TrustError, parse_public_key

        try:
            parse_public_key(config.models.public_key)
        except TrustError as err:
            raise ConfigError(f"{where}: models.public_key: {err}") from None
    j = config.jobs
    checks = [
        (config.broker.protocol in ("3.1.1", "5"), "broker.protocol must be \"3.1.1\" or \"5\""),
        (config.broker.keepalive_s >= 5, "broker.keepalive_s must be at least 5"),
        (config.broker.max_backoff_s >= 1, "broker.max_backoff_s must be at least 1"),
        (config.health.interval_s >= 1, "health.interval_s must be at least 1"),
        (config.outbox.max_messages >= 1, "outbox.max_messages must be at least 1"),
        (config.outbox.max_age_days > 0, "outbox.max_age_days must be more than 0"),
        (config.outbox.max_bytes >= 64 * 1024, "outbox.max_bytes must be at least 65536"),
        (config.jobs.max_runs >= 1, "jobs.max_runs must be at least 1"),
        (config.jobs.max_time_s > 0, "jobs.max_time_s must be more than 0"),
        (config.jobs.max_wait_s >= 0, "jobs.max_wait_s must be 0 or more"),
        (j.max_warmup_runs >= 0, "jobs.max_warmup_runs must be 0 or more"),
        (j.max_threads >= 0, "jobs.max_threads must be 0 (the logical cores) or more"),
        (j.max_job_s > 0, "jobs.max_job_s must be more than 0"),
        (j.max_waiting >= 1, "jobs.max_waiting must be at least 1"),
        (j.max_model_bytes >= 1, "jobs.max_model_bytes must be at least 1"),
        (j.cache_bytes >= 0, "jobs.cache_bytes must be 0 or more"),
        (0 <= config.jobs.min_battery_percent <= 100, "jobs.min_battery_percent must be 0-100"),
        (config.log_level.lower() in ("debug", "info", "warning", "error"),
         "log_level must be debug, info, warning or error"),
        (bool(config.state_dir), "state_dir must not be empty"),
    ]  # fmt: skip
    check(where, checks)


def validate(config: AgentConfig) -> AgentConfig:
    """Range and format checks that types alone cannot make; returns the config."""
    validate_device(config)
    where = config.source or "configuration"
    checks = [
        (config.degradation.interval_s >= 60, "degradation.interval_s must be at least 60"),
        (config.models.max_bytes >= 1, "models.max_bytes must be at least 1"),
        (bool(config.homeassistant.prefix.strip("/")), "homeassistant.prefix must not be empty"),
    ]
    check(where, checks)
    return config


def load(
    path: Optional[str] = None,
    env: Optional[Mapping[str, str]] = None,
    flags: Optional[Mapping[str, Any]] = None,
) -> AgentConfig:
    """Defaults < file < environment < flags, validated.

    ``path`` None means ``/etc/fleetbench/agent.toml`` if it exists; a path that was
    asked for and is missing is an error.  ``flags`` maps top-level keys or
    "section.key" names to values (None means "not given").
    """
    env = dict(os.environ) if env is None else env
    return validate(layered(AgentConfig(state_dir=default_state_dir(env)), path, DEFAULT_PATH, env, flags))
