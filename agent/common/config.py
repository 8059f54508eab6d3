"""The layered configuration loader every fleetbench program uses.

Precedence, lowest first: the defaults (a frozen dataclass whose fields are keys or
sections) < a TOML file < ``PREFIX_*`` environment variables < command-line flags.
Every key has an environment name: the prefix + the section and key in capitals, e.g.
``FLEETBENCH_BROKER_URL``.  Values are coerced to the field's type once, here, and a
wrong one is a ``ConfigError`` naming where it came from (file, environment, command
line), the key and what it must be.  Nothing in a configuration is executed.

A configuration class may name ``FOREIGN_SECTIONS``: sections of the same file that
another fleetbench program owns and checks (the agent and the bridge share one file).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional, Union, cast, get_type_hints

from agent.common.errors import UsageError

ENV_PREFIX = "FLEETBENCH_"


class ConfigError(UsageError):
    """The configuration (file, environment or flags) is invalid."""


@dataclass(frozen=True)
class BrokerConfig:
    """``[broker]``: the same section for the agent, the bridge and the coordinator."""

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


def redact_url(url: Optional[str]) -> Optional[str]:
    """``url`` with its password (if any) replaced, for status files, logs and listings.

    >>> redact_url("mqtts://pi:s3cret@hub.example.org:8883")
    'mqtts://pi:***@hub.example.org:8883'
    """
    if not url or "@" not in url:
        return url
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    user, _, host = parts.netloc.rpartition("@")
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user.split(':', 1)[0]}:***@{host}"))


def check_tls_files(broker: BrokerConfig, where: str) -> None:
    """ConfigError if a TLS file the broker settings name cannot be read: a daemon must not start
    and then fail at every reconnect, saying so only in its log."""
    url = broker.url or ""
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(broker, key)
        if path is None:
            continue
        try:
            with open(path, "rb") as fh:
                fh.read(1)
        except OSError as err:
            raise ConfigError(f"{where}: broker.{key} {path!r} cannot be read: {err.strerror}") from None
    if url.startswith("mqtts://") and (broker.cert_file is None) != (broker.key_file is None):
        raise ConfigError(f"{where}: broker.cert_file and broker.key_file go together (a client certificate "
                          "and its key)")  # fmt: skip
    if broker.cert_file and not url.startswith("mqtts://") and url:
        raise ConfigError(f"{where}: broker.cert_file is set but broker.url {url!r} is not mqtts://")


def check(where: str, checks: list[tuple[bool, str]]) -> None:
    """ConfigError naming ``where`` (the file, or "configuration") and the first failed check."""
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{where}: {message}")


def default_state_dir(env: Mapping[str, str], name: str = "fleetbench") -> str:
    """systemd's StateDirectory=, else /var/lib/NAME for root, else the XDG state dir."""
    if env.get("STATE_DIRECTORY"):
        return env["STATE_DIRECTORY"].split(":")[0]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return os.path.join("/var/lib", name)
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, name)


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
    # Sections another fleetbench program reads from the same file (the agent's file has the
    # bridge's [bridge]; the bridge skips the agent's [models]): theirs to check, not ours.
    foreign = getattr(type(config), "FOREIGN_SECTIONS", ())
    top = {k: v for k, v in data.items() if k not in sections and k not in foreign}
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


def env_names(cls: type, prefix: str = ENV_PREFIX) -> dict[str, tuple[Optional[str], str]]:
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


def _from_env(env: Mapping[str, str], cls: type, prefix: str = ENV_PREFIX) -> dict[str, Any]:
    """FLEETBENCH_* variables as a nested mapping of strings.  Other FLEETBENCH_* variables
    (FLEETBENCH_TIMER, FLEETBENCH_CONFIG, ...) belong to other parts and are left alone."""
    data: dict[str, Any] = {}
    names = env_names(cls, prefix)
    for name, value in env.items():
        if name in names:
            section, key = names[name]
            (data.setdefault(section, {}) if section else data)[key] = value
    return data


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
