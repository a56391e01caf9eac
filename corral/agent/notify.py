"""sd_notify(3) in a few lines: "READY=1" when the agent serves, "RELOADING=1" and "READY=1"
around a SIGHUP reload, "STOPPING=1" on the way out, on the datagram socket systemd names in
$NOTIFY_SOCKET (Type=notify). Without that variable (not under systemd) it does nothing."""

from __future__ import annotations

import os
import socket
import time


def sd_notify(state: str, env: str = "NOTIFY_SOCKET") -> bool:
    """Send ``state``; False when there is no socket or the send failed (never raises)."""
    address = os.environ.get(env, "")
    if not address or address[0] not in "/@":
        return False
    if address[0] == "@":  # the abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError:
        return False
    return True


def reloading() -> bool:
    """systemd 253+ wants the CLOCK_MONOTONIC time of the reload with RELOADING=1."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return sd_notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")
