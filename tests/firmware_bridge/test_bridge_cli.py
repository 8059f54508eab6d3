"""`fleetbench bridge` as a person types it: --list, --once against an emulated board, and
one-sentence errors with exit 2 (usage) or 1 (the port or board failed)."""

from __future__ import annotations

import json

import pytest
from daemon_proc import fleetbench

from firmware_bridge.cli import state_dir_for
from firmware_bridge.emulator import BoardSpec, EmulatedBoard


@pytest.fixture
def board(tmp_path):
    b = EmulatedBoard(BoardSpec(noise=0.0), link=str(tmp_path / "ttyACM0")).start()
    yield b
    b.stop()


def test_once_hello_and_health(board):
    out = fleetbench("bridge", "--port", board.port, "--once", "hello", "--format", "json")
    assert out.returncode == 0, out.stderr
    hello = json.loads(out.stdout)
    assert hello["device id"] == "fleetbench-emulated-board-e0a1b2c3d4e5f601"
    assert hello["clock"] == "64 MHz" and hello["models"] == "kws_micro, person_detect"
    out = fleetbench("bridge", "--port", board.port, "--once", "health")
    assert out.returncode == 0 and "die temperature: 41.50 C" in out.stdout


def test_once_bench_prints_the_result_record(board):
    out = fleetbench("bridge", "--port", board.port, "--once", "bench", "kws_micro", "--runs", "64",
                     "--format", "json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    (record,) = json.loads(out.stdout)
    assert record["stats"]["n"] == 64 and record["stats"]["p50_ms"] == 12.5
    assert record["timer"]["impl"] == "mcu" and record["device"]["board"] == "fleetbench emulated board"
    table = fleetbench("bridge", "--port", board.port, "--once", "bench", "kws_micro", "--runs", "5").stdout
    assert "kws_micro" in table and "12.500" in table and "cycle counter at 64000000 Hz" in table


def test_list_answers_on_any_host():
    out = fleetbench("bridge", "--list", "--format", "json")
    assert out.returncode == 0, out.stderr
    assert isinstance(json.loads(out.stdout), list)


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        ((), 2, "give --port PORT"),
        (("--list", "--port", "/dev/ttyACM0"), 2, "--list takes no --port"),
        (("--port", "P", "hello"), 2, "needs --once"),
        (("--port", "P", "--once"), 2, "--once needs a REQUEST"),
        (("--port", "P", "--once", "bench"), 2, "bench takes one MODEL id"),
        (("--port", "P", "--once", "hello", "--format", "csv"), 2, "csv is for bench results"),
        (("--port", "P", "--device-id", "a/b"), 2, "device id 'a/b' must be"),
        (("--port", "P", "--baud", "0"), 2, "'0' is less than 50"),
        (
            ("--port", "/nonexistent/ttyACM9", "--once", "hello"),
            1,
            "does not exist (is the board plugged in?",
        ),
        (("--port", "nope://x", "--once", "hello"), 2, "protocol 'nope' not known"),
    ],
)
def test_mistakes_are_one_sentence(args, code, words):
    out = fleetbench("bridge", *args)
    assert out.returncode == code and words in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_an_unknown_model_exits_1_naming_what_the_board_said(board):
    out = fleetbench("bridge", "--port", board.port, "--once", "bench", "resnet50")
    assert out.returncode == 1 and "no model 'resnet50' in this firmware" in out.stderr


def test_each_port_gets_its_own_state_directory():
    assert (
        state_dir_for("/dev/ttyACM0", "/var/lib/fleetbench", None, {}) == "/var/lib/fleetbench/bridge-ttyACM0"
    )
    assert state_dir_for("/dev/ttyACM0", "/x", None, {"STATE_DIRECTORY": "/var/lib/b/t"}) == "/var/lib/b/t"
    assert state_dir_for("/dev/ttyACM0", "/x", "/mine", {"STATE_DIRECTORY": "/y"}) == "/mine"


def test_a_usb_port_is_described_with_its_ids_and_stable_name(tmp_path):
    from serial.tools.list_ports_common import ListPortInfo

    from firmware_bridge.ports import by_id_links, describe

    info = ListPortInfo("/dev/ttyACM0", skip_link_detection=True)
    info.vid, info.pid, info.serial_number = 0x2341, 0x805A, "0123ABCD"
    info.manufacturer, info.product, info.location = "Arduino", "Nano 33 BLE", "1-1.2:1.0"
    info.apply_usb_info()
    d = describe(info)
    assert d["usb"] == "2341:805a" and d["serial_number"] == "0123ABCD" and d["product"] == "Nano 33 BLE"
    assert d["hwid"] == "USB VID:PID=2341:805A SER=0123ABCD LOCATION=1-1.2:1.0"
    assert describe(ListPortInfo("/dev/ttyS0", skip_link_detection=True))["usb"] is None
    target = tmp_path / "ttyACM0"
    target.touch()
    (tmp_path / "by-id").mkdir()
    (tmp_path / "by-id" / "usb-Arduino_Nano_0123-if00").symlink_to(target)
    assert by_id_links(str(tmp_path / "by-id")) == {
        str(target): str(tmp_path / "by-id/usb-Arduino_Nano_0123-if00")
    }
    assert by_id_links(str(tmp_path / "missing")) == {}
