"""raise_fd_rlimit: corral serve raises its soft RLIMIT_NOFILE to keep files open."""

from __future__ import annotations

import subprocess
import sys

# As an unprivileged user (no CAP_SYS_RESOURCE): the hard limit is a ceiling. With the
# capability the hard limit is raised too: tests/kernel/test_fd_rlimit.py (root in the machine).
CHILD = """
import os, resource
from runtime.cgroupfs.openfiles import raise_fd_rlimit, fd_bound
hard = 8192
resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
os.setresgid(65534, 65534, 65534)
os.setresuid(65534, 65534, 65534)
print(fd_bound(100000), raise_fd_rlimit(4096), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
print(raise_fd_rlimit(10**6), raise_fd_rlimit(2048), fd_bound(100000))
"""


def test_soft_limit_rises_to_the_wanted_count_but_never_past_hard_or_down() -> None:
    # In a child: the limit is per process and this one must stay as it was.
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True)
    first, second = (line.split() for line in out.stdout.splitlines())
    assert first == ["768", "4096", "4096"]  # 1024 - 256 reserved; raised to 4096
    assert second == ["8192", "8192", "7936"]  # capped at hard; never lowered
