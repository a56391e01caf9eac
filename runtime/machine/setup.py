"""`corral machine setup`: install what the machine needs, and nothing already present."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

from runtime.machine.requirements import APT_PACKAGES, PIP_PACKAGE, find_requirements


def missing_apt_packages() -> list[str]:
    req = find_requirements(check_kvm=False)
    wanted = {
        "qemu-system-x86": req.qemu is None,
        "linux-image-amd64": req.kernel is None,
        "busybox-static": not os.path.exists("/bin/busybox")
        and not os.path.exists("/usr/bin/busybox"),
    }
    return [p for p in APT_PACKAGES if wanted[p]]


def setup(say: Callable[[str], None] = print) -> None:
    """apt-get the Debian packages and pip-install virtme-ng into this interpreter's env."""
    apt = missing_apt_packages()
    if apt:
        if os.geteuid() != 0:
            raise SystemExit(
                f"corral machine setup: installing {' '.join(apt)} needs root (run it with sudo)"
            )
        say(f"installing Debian packages: {' '.join(apt)}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", *apt], check=True, env=env)
    if find_requirements(check_kvm=False).vng is None:
        say(f"installing {PIP_PACKAGE} into {sys.prefix}")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", PIP_PACKAGE], check=True)
    missing = find_requirements(check_kvm=False).missing
    if missing:
        raise SystemExit("corral machine setup: still missing: " + "; ".join(missing))
    say("machine requirements present")
