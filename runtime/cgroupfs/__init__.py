"""cgroup v2 files as typed values: the only code in corral that touches them.

``CgroupFS(root)`` opens, walks, creates and removes cgroups; one module per controller
(``cpu``, ``memory``, ``io``, ``pids``, ``pressure``, ``cpuset``, ``core``) holds the pure
``parse_*`` functions and the thin ``read_*``/``write_*`` functions named after kernel files;
``limit_syntax`` parses the human limit syntax (``256M``, ``0.5``, ``/dev/vda wbps=1M``).
"""

from runtime.cgroupfs.errors import (
    CgroupError,
    CgroupGone,
    ControllerUnavailable,
    InvalidLimit,
    InvalidPath,
    NotCgroup2,
    ParseError,
    WriteRejected,
)
from runtime.cgroupfs.formats import MAX, IntOrMax, Unlimited
from runtime.cgroupfs.fs import DEFAULT_ROOT, CgroupFS, join, normalize

__all__ = [
    "DEFAULT_ROOT",
    "MAX",
    "CgroupError",
    "CgroupFS",
    "CgroupGone",
    "ControllerUnavailable",
    "IntOrMax",
    "InvalidLimit",
    "InvalidPath",
    "NotCgroup2",
    "ParseError",
    "Unlimited",
    "WriteRejected",
    "join",
    "normalize",
]
