"""sysfs/procfs trees as five kinds of device show them, for collectors and identity tests.

Values are what these boards report (file names, formats, units and quirks such as
NUL-terminated device-tree strings, the Jetson Nano's constant 100 C PMIC zone and the
Raspberry Pi firmware's hex throttling field).  ``make_tree(tmp_path, RPI4)`` lays one
out under a temporary root.
"""

from __future__ import annotations

MACHINE_ID = "4b8f0e6c2d3a4f5e9a1b2c3d4e5f6a7b\n"


def _cpus(n: int, clusters: tuple[int, ...] = ()) -> dict[str, str]:
    files = {}
    for i in range(n):
        files[f"/sys/devices/system/cpu/cpu{i}/topology/core_id"] = f"{i}\n"
        files[f"/sys/devices/system/cpu/cpu{i}/topology/physical_package_id"] = (
            f"{sum(1 for c in clusters if i >= c) - 1 if clusters else 0}\n"
        )
    return files


_MEMINFO = "MemTotal:{total} kB\nMemFree:         {free} kB\nMemAvailable:   {avail} kB\nBuffers: 0 kB\n"

# Raspberry Pi 4 Model B, Raspberry Pi OS (bookworm), kernel 6.1.
RPI4 = {
    "/proc/cpuinfo": (
        "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
        "CPU implementer\t: 0x41\nCPU part\t: 0xd08\n\n"
        "Hardware\t: BCM2835\nRevision\t: c03114\nSerial\t\t: 100000002a5d1e3f\n"
        "Model\t\t: Raspberry Pi 4 Model B Rev 1.4\n"
    ),
    "/proc/device-tree/model": b"Raspberry Pi 4 Model B Rev 1.4\x00",
    "/proc/loadavg": "0.08 0.12 0.09 1/213 1822\n",
    "/proc/meminfo": _MEMINFO.format(total="        3884084", free="2911516", avail="3472204"),
    "/etc/machine-id": MACHINE_ID,
    "/sys/devices/system/cpu/cpufreq/policy0/related_cpus": "0 1 2 3\n",
    "/sys/devices/system/cpu/cpufreq/policy0/scaling_governor": "ondemand\n",
    "/sys/devices/system/cpu/cpufreq/policy0/scaling_cur_freq": "600000\n",
    "/sys/devices/system/cpu/cpufreq/policy0/scaling_min_freq": "600000\n",
    "/sys/devices/system/cpu/cpufreq/policy0/scaling_max_freq": "1500000\n",
    "/sys/class/thermal/thermal_zone0/type": "cpu-thermal\n",
    "/sys/class/thermal/thermal_zone0/temp": "48686\n",
    # under-voltage and throttled now, and both since boot
    "/sys/devices/platform/soc/soc:firmware/get_throttled": "50005\n",
    "/sys/class/hwmon/hwmon1/name": "rpi_volt\n",
    "/sys/class/hwmon/hwmon1/in0_lcrit_alarm": "0\n",
    **_cpus(4),
}

# Jetson Nano Developer Kit, L4T R32.7.1.
JETSON_NANO = {
    "/etc/nv_tegra_release": (
        "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64\n"
    ),
    "/proc/device-tree/model": b"NVIDIA Jetson Nano Developer Kit\x00",
    "/proc/cpuinfo": "processor\t: 0\nmodel name\t: ARMv8 Processor rev 1 (v8l)\nBogoMIPS\t: 38.40\n",
    "/proc/loadavg": "1.21 0.97 0.80 2/611 5307\n",
    "/proc/meminfo": _MEMINFO.format(total="        4051060", free="1731204", avail="2822952"),
    "/etc/machine-id": MACHINE_ID,
    "/sys/devices/system/cpu/cpufreq/policy0/related_cpus": "0 1 2 3\n",
    "/sys/devices/system/cpu/cpufreq/policy0/scaling_governor": "schedutil\n",
    "/sys/devices/system/cpu/cpufreq/policy0/scaling_cur_freq": "1479000\n",
    "/sys/devices/system/cpu/cpufreq/policy0/scaling_min_freq": "102000\n",
    "/sys/devices/system/cpu/cpufreq/policy0/scaling_max_freq": "1479000\n",
    "/sys/class/thermal/thermal_zone0/type": "AO-therm\n",
    "/sys/class/thermal/thermal_zone0/temp": "37500\n",
    "/sys/class/thermal/thermal_zone1/type": "CPU-therm\n",
    "/sys/class/thermal/thermal_zone1/temp": "41000\n",
    "/sys/class/thermal/thermal_zone2/type": "GPU-therm\n",
    "/sys/class/thermal/thermal_zone2/temp": "38500\n",
    "/sys/class/thermal/thermal_zone3/type": "PLL-therm\n",
    "/sys/class/thermal/thermal_zone3/temp": "36750\n",
    "/sys/class/thermal/thermal_zone4/type": "PMIC-Die\n",
    "/sys/class/thermal/thermal_zone4/temp": "100000\n",
    "/sys/class/thermal/thermal_zone5/type": "thermal-fan-est\n",
    "/sys/class/thermal/thermal_zone5/temp": "38600\n",
    "/dev/nvhost-ctrl-gpu": "",
    "/var/lib/nvpmodel/status": "pmode:0001\n",
    "/etc/nvpmodel.conf": (
        "# NVPModel configuration for Jetson Nano\n"
        "< POWER_MODEL ID=0 NAME=MAXN >\nCPU_ONLINE CORE_0 1\nCPU_ONLINE CORE_1 1\n"
        "< POWER_MODEL ID=1 NAME=5W >\nCPU_ONLINE CORE_0 1\nCPU_ONLINE CORE_2 0\n"
        "< PM_CONFIG DEFAULT=0 >\n"
    ),
    **_cpus(4),
}

# Coral Dev Board (i.MX 8M, Mendel Linux 5.3), with its PCIe Edge TPU.
CORAL_DEV_BOARD = {
    "/proc/device-tree/model": b"Freescale i.MX8MQ Phanbell\x00",
    "/proc/cpuinfo": "processor\t: 0\nBogoMIPS\t: 16.66\nFeatures\t: fp asimd evtstrm aes crc32\n",
    "/proc/loadavg": "0.02 0.05 0.01 1/140 988\n",
    "/proc/meminfo": _MEMINFO.format(total="        1010744", free="556132", avail="781244"),
    "/etc/machine-id": MACHINE_ID,
    "/dev/apex_0": "",
    "/sys/class/apex/apex_0/temp": "41250\n",
    "/sys/class/apex/apex_0/trip_point0_temp": "85000\n",
    "/sys/devices/system/cpu/cpufreq/policy0/related_cpus": "0 1 2 3\n",
    "/sys/devices/system/cpu/cpufreq/policy0/scaling_governor": "ondemand\n",
    "/sys/devices/system/cpu/cpufreq/policy0/scaling_cur_freq": "1000000\n",
    "/sys/devices/system/cpu/cpufreq/policy0/scaling_min_freq": "1000000\n",
    "/sys/devices/system/cpu/cpufreq/policy0/scaling_max_freq": "1500000\n",
    "/sys/class/thermal/thermal_zone0/type": "cpu-thermal\n",
    "/sys/class/thermal/thermal_zone0/temp": "46000\n",
    "/sys/class/thermal/thermal_zone1/type": "gpu-thermal\n",
    "/sys/class/thermal/thermal_zone1/temp": "45000\n",
    **_cpus(4),
}

# Pixel 3 running Termux: big.LITTLE cpufreq policies, a readable battery with its
# design capacity, thermal zones hidden by SELinux (no thermal_zone files at all).
PIXEL3 = {
    "/proc/cpuinfo": "processor\t: 0\nBogoMIPS\t: 38.40\nHardware\t: Qualcomm Technologies, Inc SDM845\n",
    "/proc/loadavg": "3.41 3.62 3.70 4/2254 21870\n",
    "/proc/meminfo": _MEMINFO.format(total="        3753232", free="138024", avail="1304336"),
    "/sys/devices/system/cpu/cpufreq/policy0/related_cpus": "0 1 2 3\n",
    "/sys/devices/system/cpu/cpufreq/policy0/scaling_governor": "schedutil\n",
    "/sys/devices/system/cpu/cpufreq/policy0/scaling_cur_freq": "1132800\n",
    "/sys/devices/system/cpu/cpufreq/policy0/scaling_max_freq": "1766400\n",
    "/sys/devices/system/cpu/cpufreq/policy4/related_cpus": "4 5 6 7\n",
    "/sys/devices/system/cpu/cpufreq/policy4/scaling_governor": "schedutil\n",
    "/sys/devices/system/cpu/cpufreq/policy4/scaling_cur_freq": "825600\n",
    "/sys/devices/system/cpu/cpufreq/policy4/scaling_max_freq": "2803200\n",
    "/sys/class/power_supply/battery/type": "Battery\n",
    "/sys/class/power_supply/battery/status": "Discharging\n",
    "/sys/class/power_supply/battery/capacity": "64\n",
    "/sys/class/power_supply/battery/health": "Good\n",
    "/sys/class/power_supply/battery/charge_full": "2380000\n",
    "/sys/class/power_supply/battery/charge_full_design": "2915000\n",
    "/sys/class/power_supply/usb/type": "USB\n",
    "/sys/class/power_supply/usb/online": "0\n",
    **_cpus(8, clusters=(0, 4)),
}

# termux-battery-status on that phone (Termux:API), as JSON.
PIXEL3_TERMUX_BATTERY = (
    '{\n  "health": "GOOD",\n  "percentage": 64,\n  "plugged": "UNPLUGGED",\n'
    '  "status": "DISCHARGING",\n  "temperature": 29.100000381469727,\n  "current": -352000\n}\n'
)
PIXEL3_PROPS = {"ro.product.model": "Pixel 3", "ro.product.manufacturer": "Google", "ro.serialno": "8ABX1Y2Z"}
TERMUX_ENV = {"PREFIX": "/data/data/com.termux/files/usr"}

# A bare VM: nothing at all below the root; every collector says "unavailable".
BARE_VM: dict[str, str] = {}

ALL = {
    "rpi4": RPI4,
    "jetson-nano": JETSON_NANO,
    "coral-dev-board": CORAL_DEV_BOARD,
    "pixel3": PIXEL3,
    "bare-vm": BARE_VM,
}
