"""The CPU quota a process runs under, read from cgroup trees laid out as real machines show them."""

from __future__ import annotations

import pytest
from sysfs_tree import make_tree

from agent.collectors.cpu import CpuQuota, cpu_quota

pytestmark = pytest.mark.portable  # runs under arm64 emulation too (.ci/arm64)

# cgroup v1 as on this Debian VM and a Raspberry Pi OS bullseye: one tree per controller
V1_CGROUP = "4:memory:/box\n3:cpuset:/\n2:cpu,cpuacct:/system.slice/agent.service\n0::/\n"


def test_a_docker_container_on_cgroup_v2_reads_its_own_root(tmp_path):
    # inside a container (a cgroup namespace) its cgroup is "/", and cpu.max at the root is the limit
    r = make_tree(tmp_path, {"/proc/self/cgroup": "0::/\n", "/sys/fs/cgroup/cpu.max": "50000 100000\n"})
    assert cpu_quota(r) == CpuQuota(cores=0.5, period_s=0.1)


def test_systemd_cpuquota_on_cgroup_v2_and_the_tightest_level_counts(tmp_path):
    r = make_tree(tmp_path, {
        "/proc/self/cgroup": "0::/system.slice/fleetbench-agent.service\n",
        "/sys/fs/cgroup/system.slice/fleetbench-agent.service/cpu.max": "150000 100000\n",
        "/sys/fs/cgroup/system.slice/cpu.max": "max 100000\n",
        "/sys/fs/cgroup/cpu.max": "80000 200000\n",
    })  # fmt: skip
    assert cpu_quota(r) == CpuQuota(cores=0.4, period_s=0.2)


def test_cgroup_v1_with_the_quota_on_a_parent(tmp_path):
    r = make_tree(tmp_path, {
        "/proc/self/cgroup": V1_CGROUP,
        "/sys/fs/cgroup/cpu,cpuacct/system.slice/agent.service/cpu.cfs_quota_us": "-1\n",
        "/sys/fs/cgroup/cpu,cpuacct/system.slice/agent.service/cpu.cfs_period_us": "100000\n",
        "/sys/fs/cgroup/cpu,cpuacct/system.slice/cpu.cfs_quota_us": "1100\n",
        "/sys/fs/cgroup/cpu,cpuacct/system.slice/cpu.cfs_period_us": "2000\n",
        "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
        "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
    })  # fmt: skip
    assert cpu_quota(r) == CpuQuota(cores=0.55, period_s=0.002)


@pytest.mark.parametrize(
    "files",
    [
        {},  # no /proc (an Android app without access): no quota known
        {"/proc/self/cgroup": "0::/\n", "/sys/fs/cgroup/cpu.max": "max 100000\n"},
        {"/proc/self/cgroup": V1_CGROUP, "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "-1\n"},
        {"/proc/self/cgroup": "0::/\n", "/sys/fs/cgroup/cpu.max": "garbage\n"},
        {"/proc/self/cgroup": "2:cpu:/a\n"},  # the tree is not mounted
    ],
    ids=["nothing", "v2-unlimited", "v1-unlimited", "v2-unreadable", "v1-unmounted"],
)
def test_no_quota(tmp_path, files):
    assert cpu_quota(make_tree(tmp_path, files)) is None
