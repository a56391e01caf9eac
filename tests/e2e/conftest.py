"""The end-to-end tests run whole commands on this host, which must be left as found:

- `corral run` goes with --network none unless a test asks otherwise, so the host's own
  network namespace (bridge, nft rules, ip_forward) is never touched;
- containers go under a cgroup parent of this run's own (the runtime leaves its parent in
  place, as docker leaves its slice), removed at the end.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from runtime.cgroupfs import CgroupError, CgroupFS

os.environ.setdefault("CORRAL_NETWORK", "none")
PARENT = f"corral-e2e-{os.getpid()}"
os.environ["CORRAL_CGROUP_PARENT"] = PARENT


@pytest.fixture(scope="session", autouse=True)
def _remove_the_cgroup_parent() -> Iterator[None]:
    yield
    with contextlib.suppress(CgroupError, OSError):
        fs = CgroupFS.discover()
        if fs.exists(PARENT):
            fs.remove(PARENT, recursive=True)
