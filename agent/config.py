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
import difflib
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional, Union, cast, get_type_hints

from agent.errors import UsageError

DEFAULT_PATH = "/etc/fleetbench/agent.toml"
#: StateDirectory= of systemd/fleetbench-agent.service, and root's default
SERVICE_STATE_DIR = "/var/lib/fleetbench"
ENV_PREFIX = "FLEETBENCH_"


class ConfigError(UsageError):
    """The configuration (file, environment or flags) is invalid."""


@dataclass(frozen=True)
class BrokerConfig:
    #: mqtt://[user[:password]@]HOST[:PORT] or mqtts://...; empty: discover _mqtt._tcp on the LAN
    url: Optional[str] = None
    protocol: str = "3.1.1"  # or "5"
    username: Optional[str] = None
    password: Optional[str] = None
    ca_file: Optional[str] = None
    cert_file: Optional[str] = None
    key_file: Optional[str] = None
    keepalive_s: int = 30
    max_backoff_s: float = 60.0


@dataclass(frozen=True)
class HealthConfig:
    interval_s: float = 60.0


@dataclass(frozen=True)
class OutboxConfig:
    max_messages: int = 100_000
    max_age_days: float = 7.0


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


@dataclass(frozen=True)
class DiscoveryConfig:
    enabled: bool = True
    #: addresses to advertise and browse on (default: all); tests use ["127.0.0.1"]
    interfaces: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelsConfig:
    #: the coordinator's public key, "ed25519:<base64>" (`fleetbench keygen` prints it);
    #: pushes are accepted only when signed by it, and refused while it is unset
    public_key: Optional[str] = None
    #: refuse a pushed model larger than this
    max_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class BridgeConfig:
    """``fleetbench bridge``: a microcontroller on a serial line (firmware_bridge/PROTOCOL.md)."""

    baud: int = 115200
    #: a request unanswered this long is sent again, ``retries`` times
    timeout_s: float = 2.0
    retries: int = 3
    #: a run that sends nothing for this long has stalled and fails
    stall_timeout_s: float = 30.0
    #: how often a missing port (board unplugged) is looked for
    reopen_s: float = 2.0
    #: runs and warm-up runs of a job that does not say
    runs: int = 50
    warmup_runs: int = 5


@dataclass(frozen=True)
class HomeAssistantConfig:
    enabled: bool = False
    prefix: str = "homeassistant"


def default_state_dir(env: Mapping[str, str], name: str = "fleetbench") -> str:
    """systemd's StateDirectory=, else /var/lib/NAME for root, else the XDG state dir."""
    if env.get("STATE_DIRECTORY"):
        return env["STATE_DIRECTORY"].split(":")[0]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return os.path.join("/var/lib", name)
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, name)


@dataclass(frozen=True)
class AgentConfig:
    device_id: Optional[str] = None
    state_dir: str = ""  # filled by load(): see default_state_dir
    log_level: str = "info"
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    degradation: DegradationConfig = field(default_factory=DegradationConfig)
    jobs: JobsConfig = field(default_factory=JobsConfig)
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    homeassistant: HomeAssistantConfig = field(default_factory=HomeAssistantConfig)
    bridge: BridgeConfig = field(default_factory=BridgeConfig)
    #: where the file came from, for messages and SIGHUP (not a key in the file)
    source: Optional[str] = field(default=None, compare=False)

    @property
    def model_dir(self) -> str:
        return self.jobs.model_dir or os.path.join(self.state_dir, "models")

    def replace(self, **changes: Any) -> AgentConfig:
        return dataclasses.replace(self, **changes)


def _sections(cls: type) -> dict[str, Any]:
    """The fields of a configuration class that are sections (dataclasses of their own)."""
    return {f.name: f for f in dataclasses.fields(cls) if dataclasses.is_dataclass(f.default_factory)}


def _fields(cls: type) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {name: tp for name, tp in get_type_hints(cls).items() if name in names}


def _unknown(key: str, known: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(sorted(known))}"
    return ConfigError(f"{where}: unknown key {key!r}{hint}")


def _coerce(value: Any, tp: Any, key: str, where: str) -> Any:
    """``value`` (from TOML, or a string from env/flags) as type ``tp``, else a ConfigError."""
    args = getattr(tp, "__args__", ())
    if getattr(tp, "__origin__", None) is Union:  # Optional[X]
        if value is None or (isinstance(value, str) and value == ""):
            return None
        tp = next(a for a in args if a is not type(None))
        args = getattr(tp, "__args__", ())
    text = isinstance(value, str)
    try:
        if tp is bool:
            if text and value.lower() in ("1", "true", "yes", "on"):
                return True
            if text and value.lower() in ("0", "false", "no", "off"):
                return False
            if isinstance(value, bool):
                return value
            raise ValueError
        if tp is int:
            if isinstance(value, bool) or not (isinstance(value, int) or text):
                raise ValueError
            return int(value)
        if tp is float:
            if isinstance(value, bool) or not (isinstance(value, (int, float)) or text):
                raise ValueError
            number = float(value)
            if not math.isfinite(number):
                raise ValueError
            return number
        if tp is str:
            if not text:
                raise ValueError
            return value
        if getattr(tp, "__origin__", None) is dict:  # a TOML table, or "a=1,b=2" from env/flags
            table: Any = value
            if text:  # a pair without "=" does not unpack: ValueError, reported below
                pairs = (p.split("=", 1) for p in value.split(",") if p.strip())
                table = {k.strip(): v.strip() for k, v in pairs}
            if not isinstance(table, Mapping):
                raise ValueError
            return {str(k): _coerce(v, tp.__args__[1], f"{key}.{k}", where) for k, v in table.items()}
        if getattr(tp, "__origin__", None) is tuple:
            items = [v.strip() for v in value.split(",") if v.strip()] if text else value
            if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
                raise ValueError
            return tuple(items)
    except ValueError:
        raise ConfigError(f"{where}: {key} must be {_describe(tp)} (got {value!r})") from None
    raise TypeError(f"no coercion for {tp!r}")  # pragma: no cover - a bug in the schema


def _describe(tp: Any) -> str:
    if getattr(tp, "__origin__", None) is dict:
        return "a table of names to values"
    return {bool: "true or false", int: "a whole number", float: "a finite number", str: "a string"}.get(
        tp, "a list of strings"
    )


def _section_from(cls: type, base: Any, values: Mapping[str, Any], prefix: str, where: str) -> Any:
    types = _fields(cls)
    changes = {}
    for key, value in values.items():
        if key not in types:
            raise _unknown(f"{prefix}{key}", [f"{prefix}{k}" for k in types], where)
        changes[key] = _coerce(value, types[key], f"{prefix}{key}", where)
    return dataclasses.replace(base, **changes) if changes else base


def _merge(config: Any, data: Mapping[str, Any], where: str) -> Any:
    sections = _sections(type(config))
    top = {k: v for k, v in data.items() if k not in sections}
    config = _section_from(type(config), config, top, "", where) if top else config
    for name in sections:
        if name in data:
            if not isinstance(data[name], Mapping):
                raise ConfigError(f"{where}: [{name}] must be a table of keys")
            section = _section_from(type(getattr(config, name)), getattr(config, name), data[name],
                                    f"{name}.", where)  # fmt: skip
            config = dataclasses.replace(config, **{name: section})
    return config


def _read_toml(path: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Python 3.9/3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path!r} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path!r} is a directory") from None
    except PermissionError:
        raise ConfigError(f"config file {path!r} is not readable by this user") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {path!r} is not valid TOML: {err}") from None


def _env_names(cls: type = AgentConfig, prefix: str = ENV_PREFIX) -> dict[str, tuple[Optional[str], str]]:
    """Every configuration key's environment variable: name -> (section or None, key)."""
    names: dict[str, tuple[Optional[str], str]] = {}
    sections = _sections(cls)
    for key in _fields(cls):
        if key in sections:
            for sub in _fields(cast(type, sections[key].default_factory)):
                names[f"{prefix}{key}_{sub}".upper()] = (key, sub)
        elif key != "source":
            names[f"{prefix}{key}".upper()] = (None, key)
    return names


def _from_env(env: Mapping[str, str], cls: type = AgentConfig, prefix: str = ENV_PREFIX) -> dict[str, Any]:
    """FLEETBENCH_* variables as a nested mapping of strings.  Other FLEETBENCH_* variables
    (FLEETBENCH_TIMER, FLEETBENCH_CONFIG, ...) belong to other parts and are left alone."""
    data: dict[str, Any] = {}
    names = _env_names(cls, prefix)
    for name, value in env.items():
        if name in names:
            section, key = names[name]
            (data.setdefault(section, {}) if section else data)[key] = value
    return data


def validate(config: AgentConfig) -> AgentConfig:
    """Range and format checks that types alone cannot make; returns the config."""
    from agent.transport.mqtt import BrokerSettings
    from agent.transport.topics import check_device_id

    where = config.source or "configuration"
    from agent.transport.discovery import check_interface

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
    if config.models.public_key:
        from agent.transport.push import PushError, parse_public_key

        try:
            parse_public_key(config.models.public_key)
        except PushError as err:
            raise ConfigError(f"{where}: models.public_key: {err}") from None
    if config.broker.url:
        try:
            BrokerSettings.from_url(config.broker.url)
        except UsageError as err:
            raise ConfigError(f"{where}: {err}") from None
    checks = [
        (config.broker.protocol in ("3.1.1", "5"), "broker.protocol must be \"3.1.1\" or \"5\""),
        (config.broker.keepalive_s >= 5, "broker.keepalive_s must be at least 5"),
        (config.broker.max_backoff_s >= 1, "broker.max_backoff_s must be at least 1"),
        (config.health.interval_s >= 1, "health.interval_s must be at least 1"),
        (config.outbox.max_messages >= 1, "outbox.max_messages must be at least 1"),
        (config.outbox.max_age_days > 0, "outbox.max_age_days must be more than 0"),
        (config.degradation.interval_s >= 60, "degradation.interval_s must be at least 60"),
        (config.models.max_bytes >= 1, "models.max_bytes must be at least 1"),
        (config.jobs.max_runs >= 1, "jobs.max_runs must be at least 1"),
        (config.jobs.max_time_s > 0, "jobs.max_time_s must be more than 0"),
        (config.jobs.max_wait_s >= 0, "jobs.max_wait_s must be 0 or more"),
        (0 <= config.jobs.min_battery_percent <= 100, "jobs.min_battery_percent must be 0-100"),
        (config.log_level.lower() in ("debug", "info", "warning", "error"),
         "log_level must be debug, info, warning or error"),
        (bool(config.state_dir), "state_dir must not be empty"),
        (bool(config.homeassistant.prefix.strip("/")), "homeassistant.prefix must not be empty"),
        (config.bridge.baud >= 50, "bridge.baud must be at least 50"),
        (config.bridge.timeout_s > 0, "bridge.timeout_s must be more than 0"),
        (config.bridge.retries >= 0, "bridge.retries must be 0 or more"),
        (config.bridge.stall_timeout_s > 0, "bridge.stall_timeout_s must be more than 0"),
        (config.bridge.reopen_s > 0, "bridge.reopen_s must be more than 0"),
        (1 <= config.bridge.runs <= 65535, "bridge.runs must be 1-65535"),
        (0 <= config.bridge.warmup_runs <= 65535, "bridge.warmup_runs must be 0-65535"),
    ]  # fmt: skip
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{where}: {message}")
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


def layered(
    config: Any,
    path: Optional[str],
    default_path: str,
    env: Mapping[str, str],
    flags: Optional[Mapping[str, Any]],
    env_prefix: str = ENV_PREFIX,
) -> Any:
    """``config`` (the defaults) < the file (``path``, else ``default_path`` if it exists) <
    ``env_prefix`` variables < ``flags``, unvalidated.  Shared by the agent and the coordinator."""
    if path is None and os.path.exists(default_path):
        path = default_path
    if path is not None:
        config = _merge(config, _read_toml(path), f"config file {path!r}")
        config = dataclasses.replace(config, source=path)
    config = _merge(config, _from_env(env, type(config), env_prefix), "environment")
    nested: dict[str, Any] = {}
    for key, value in (flags or {}).items():
        if value is None:
            continue
        section, _, sub = key.rpartition(".")
        (nested.setdefault(section, {}) if section else nested)[sub] = value
    return _merge(config, nested, "command line")
