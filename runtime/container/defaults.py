"""The runtime's defaults that the CLI needs before it imports the runtime (its options'
defaults, its exit status): importable at no cost. runtime.container.state, cgroup and
process re-export them under their old names."""

from __future__ import annotations

STATE_DIR = "/run/corral"  # --state-dir, CORRAL_STATE_DIR
DEFAULT_PARENT = "corral"  # --cgroup-parent, CORRAL_CGROUP_PARENT: <cgroup2>/corral/<id>
EXIT_FAILED = 125  # corral's own failure (docker, podman)
