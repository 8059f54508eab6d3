"""Agent configuration: precedence, types, and clear errors for every kind of mistake."""

from __future__ import annotations

import pytest
from keys import FLEET_PUBLIC

from agent import config
from agent.common.config import ConfigError


def write(tmp_path, text, name="agent.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_defaults_without_a_file(tmp_path):
    cfg = config.load(write(tmp_path, ""), env={"STATE_DIRECTORY": str(tmp_path / "state")})
    assert cfg.state_dir == str(tmp_path / "state")
    assert cfg.model_dir == str(tmp_path / "state" / "models")
    assert cfg.broker.url is None and cfg.broker.protocol == "3.1.1"
    assert cfg.health.interval_s == 60.0 and cfg.discovery.enabled and not cfg.homeassistant.enabled


def test_precedence_defaults_file_env_flags(tmp_path):
    path = write(
        tmp_path,
        """
device_id = "from-file"
[broker]
url = "mqtt://file-host:1883"
keepalive_s = 20
[jobs]
max_temperature_c = 70
""",
    )
    env = {
        "FLEETBENCH_BROKER_URL": "mqtt://env-host",
        "FLEETBENCH_JOBS_MAX_TEMPERATURE_C": "75",
        "FLEETBENCH_TIMER": "python",
        "STATE_DIRECTORY": "/s",
    }
    cfg = config.load(path, env=env, flags={"device_id": "from-flag", "state_dir": None})
    assert cfg.device_id == "from-flag"  # flag beats file
    assert cfg.broker.url == "mqtt://env-host"  # env beats file
    assert cfg.broker.keepalive_s == 20  # file beats default
    assert cfg.jobs.max_temperature_c == 75.0  # env string coerced
    assert cfg.state_dir == "/s" and cfg.source == path


def test_env_lists_and_booleans(tmp_path):
    env = {
        "FLEETBENCH_DISCOVERY_INTERFACES": "127.0.0.1, 10.0.0.2",
        "FLEETBENCH_HOMEASSISTANT_ENABLED": "yes",
    }
    cfg = config.load(write(tmp_path, ""), env=env)
    assert cfg.discovery.interfaces == ("127.0.0.1", "10.0.0.2") and cfg.homeassistant.enabled


def test_default_file_is_optional_and_state_dir_follows_the_user(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "DEFAULT_PATH", str(tmp_path / "absent.toml"))
    cfg = config.load(env={"XDG_STATE_HOME": str(tmp_path / "xdg")})
    assert cfg.source is None
    import os

    expected = "/var/lib/fleetbench" if os.geteuid() == 0 else str(tmp_path / "xdg" / "fleetbench")
    assert cfg.state_dir == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("[broker]\nurll = 'mqtt://x'\n", "unknown key 'broker.urll'; did you mean 'broker.url'?"),
        ("colour = 'red'\n", "unknown key 'colour'"),
        ("[broker]\nkeepalive_s = 'soon'\n", "broker.keepalive_s must be a whole number (got 'soon')"),
        ("[health]\ninterval_s = true\n", "health.interval_s must be a finite number (got True)"),
        ("[health]\ninterval_s = nan\n", "health.interval_s must be a finite number"),
        ("[health]\ninterval_s = 0\n", "health.interval_s must be at least 1"),
        ("[discovery]\nenabled = 'maybe'\n", "discovery.enabled must be true or false"),
        ("[discovery]\ninterfaces = [1, 2]\n", "discovery.interfaces must be a list of strings"),
        ("broker = 'mqtt://x'\n", "[broker] must be a table of keys"),
        ("[broker]\nurl = 'http://x'\n", "is not of the form mqtt://HOST"),
        ("[broker]\nprotocol = '3'\n", 'broker.protocol must be "3.1.1" or "5"'),
        ("device_id = 'shed/pi'\n", "device id 'shed/pi' must be"),
        ("[jobs]\nmin_battery_percent = 120\n", "jobs.min_battery_percent must be 0-100"),
        ("device_id = \n", "is not valid TOML"),
        ("[discovery]\ninterfaces = ['eth0']\n", "interface 'eth0' is not an IP address"),
    ],
)
def test_file_errors_name_the_file_and_the_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config.load(path, env={})
    assert message in str(info.value) and path in str(info.value)
    assert info.value.exit_code == 2


def test_env_and_flag_errors_say_where(tmp_path):
    with pytest.raises(ConfigError, match=r"environment: health.interval_s must be a finite number"):
        config.load(write(tmp_path, ""), env={"FLEETBENCH_HEALTH_INTERVAL_S": "often"})
    with pytest.raises(ConfigError, match=r"is not of the form mqtt://"):
        config.load(write(tmp_path, ""), env={}, flags={"broker.url": "localhost:1883"})


@pytest.mark.parametrize("kind", ["missing", "directory", "binary"])
def test_unusable_files(tmp_path, kind):
    path = tmp_path / "agent.toml"
    if kind == "directory":
        path.mkdir()
    elif kind == "binary":
        path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match=r"agent\.toml"):
        config.load(str(path), env={})


def test_config_is_frozen(tmp_path):
    cfg = config.load(write(tmp_path, ""), env={})
    with pytest.raises(AttributeError):
        cfg.device_id = "x"  # type: ignore[misc]


def test_the_agent_and_the_bridge_share_one_file_each_checking_its_own_sections(tmp_path):
    """[bridge] belongs to the bridge, [degradation] to the agent: each ignores the other's, and
    checks its own; [jobs] and [models] (the coordinator's key) are both's."""
    from firmware_bridge import config as bridge_config

    path = tmp_path / "agent.toml"
    path.write_text("[degradation]\ninterval_s = 600\n[bridge]\nbaud = 921600\n[jobs]\nmax_runs = 50\n"
                    f'[models]\npublic_key = "{FLEET_PUBLIC}"\n')  # fmt: skip
    agent_cfg = config.load(str(path), env={})
    bridge_cfg = bridge_config.load(str(path), env={})
    assert agent_cfg.degradation.interval_s == 600 and not hasattr(agent_cfg, "bridge")
    assert bridge_cfg.bridge.baud == 921600 and not hasattr(bridge_cfg, "degradation")
    assert agent_cfg.models.public_key == bridge_cfg.models.public_key == FLEET_PUBLIC
    assert agent_cfg.jobs.max_runs == bridge_cfg.jobs.max_runs == 50  # a shared section
    path.write_text("[bridge]\nbaud = 10\n")
    config.load(str(path), env={})  # not the agent's to judge
    with pytest.raises(ConfigError, match=r"bridge\.baud must be at least 50"):
        bridge_config.load(str(path), env={})
