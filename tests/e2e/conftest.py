"""The end-to-end tests run whole commands on this host: `corral run` there goes with
--network none unless a test asks otherwise, so the host's own network namespace (bridge,
nft rules, ip_forward) is never touched."""

from __future__ import annotations

import os

os.environ.setdefault("CORRAL_NETWORK", "none")
