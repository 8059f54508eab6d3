"""Device identity on trees laid out like real boards, a phone, and a bare VM."""

from __future__ import annotations

import boards
import pytest
from sysfs_tree import make_tree

from agent.collectors._sysfs import SysfsReader
from agent.collectors.identity import detect
from agent.common.errors import UsageError

pytestmark = pytest.mark.portable  # runs under arm64 emulation too (.ci/arm64)

MACHINE_ID = boards.MACHINE_ID


def test_raspberry_pi(tmp_path):
    r = make_tree(tmp_path, {"/proc/device-tree/model": b"Raspberry Pi 4 Model B Rev 1.4\x00",
                         "/etc/machine-id": MACHINE_ID})  # fmt: skip
    ident = detect(r, env={})
    assert (ident.platform, ident.sku) == ("raspberry-pi", "Raspberry Pi 4 Model B Rev 1.4")
    assert ident.device_id.startswith("raspberry-pi-") and len(ident.device_id) == len("raspberry-pi-") + 12
    assert MACHINE_ID.strip() not in ident.device_id  # hashed, never the raw machine id
    assert detect(r, env={}).device_id == ident.device_id  # stable


def test_jetson(tmp_path):
    r = make_tree(tmp_path, boards.JETSON_NANO)
    ident = detect(r, env={})
    assert (ident.platform, ident.sku) == ("jetson", "NVIDIA Jetson Nano Developer Kit")


def test_coral_dev_board_with_pcie_and_usb_edgetpu(tmp_path):
    r = make_tree(tmp_path, {
        "/proc/device-tree/model": b"Freescale i.MX8MQ Phanbell\x00",
        "/sys/class/apex/apex_0/temp": "41250\n",
        "/sys/bus/usb/devices/1-1.2/idVendor": "18d1\n",
        "/sys/bus/usb/devices/1-1.2/idProduct": "9302\n",
        "/sys/bus/usb/devices/1-1.3/idVendor": "046d\n",
        "/sys/bus/usb/devices/1-1.3/idProduct": "c52b\n",
        "/etc/machine-id": MACHINE_ID,
    })  # fmt: skip
    ident = detect(r, env={})
    assert ident.platform == "coral-dev-board" and "Phanbell" in ident.sku
    assert ident.edgetpu == ("pcie:apex_0", "usb:1-1.2")


def test_android_termux(tmp_path):
    reader = make_tree(tmp_path, boards.PIXEL3)
    ident = detect(reader, getprop=boards.PIXEL3_PROPS.get, env=boards.TERMUX_ENV)
    assert (ident.platform, ident.sku) == ("android", "Google Pixel 3")
    assert ident.device_id.startswith("android-") and "8ABX" not in ident.device_id


def test_bare_vm_has_a_generic_identity(tmp_path):
    ident = detect(SysfsReader(str(tmp_path)), env={})
    assert ident.platform == "linux" and ident.sku == "generic Linux" and ident.edgetpu == ()
    assert ident.device_id.startswith("generic-linux-")


def test_configured_id_wins_and_is_checked(tmp_path):
    r = SysfsReader(str(tmp_path))
    assert detect(r, configured_id="shed-pi-3", env={}).device_id == "shed-pi-3"
    with pytest.raises(UsageError, match="device id"):
        detect(r, configured_id="shed/pi", env={})


def test_this_machine_has_a_stable_id_that_hides_its_machine_id():
    ident = detect()
    assert detect().device_id == ident.device_id
    secret = SysfsReader().read_text("/etc/machine-id")
    if secret:
        assert secret not in ident.device_id
