"""raise_fd_rlimit with CAP_SYS_RESOURCE (root in the machine) raises the hard limit too, up to
fs.nr_open, so the collector's fd bound is not stuck at a shell's hard limit of 4096."""

from __future__ import annotations

import subprocess
import sys

CHILD = """
import resource
from runtime.cgroupfs.openfiles import raise_fd_rlimit, fd_bound
resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 4096))
nr_open = int(open("/proc/sys/fs/nr_open").read())
print(raise_fd_rlimit(40000), resource.getrlimit(resource.RLIMIT_NOFILE)[1], fd_bound(100000))
print(raise_fd_rlimit(nr_open + 10), resource.getrlimit(resource.RLIMIT_NOFILE)[1] == nr_open)
"""


def test_root_raises_the_hard_limit_up_to_nr_open() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True)
    first, second = (line.split() for line in out.stdout.splitlines())
    assert first == ["40000", "40000", str(40000 - 256)]
    assert second[1] == "True"
