"""Helpers for the network tests: every test runs in network namespaces it creates, never in
the host's (the pytest process never changes namespace; forked children do).

``in_netns(fn)`` runs ``fn`` in a forked child that unshare(CLONE_NEWNET)s and brings lo up:
that namespace plays the host. ``Container`` forks, inside it, a process in a namespace of
its own (a container's PID 1 before "go"); ``run_in(pid, fn)`` runs ``fn`` in a forked child
that setns(2)s into PID's namespace. Results and failures come back pickled over a pipe.
The tests of this file check the helpers themselves.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import time
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

from runtime import syscalls as sc
from runtime.container.process import loopback_up

T = TypeVar("T")


def _forked(fn: Callable[[], T], prepare: Callable[[], None]) -> T:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            prepare()
            payload = pickle.dumps(("ok", fn()))
        except BaseException:
            payload = pickle.dumps(("error", traceback.format_exc()))
        with os.fdopen(write, "wb") as f:
            f.write(payload)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        data = f.read()
    status = os.waitpid(pid, 0)[1]
    assert data, f"the forked child died ({status})"
    kind, value = pickle.loads(data)
    if kind == "error":
        raise AssertionError(f"in the forked child:\n{value}")
    return value  # type: ignore[no-any-return]


def _own_sysfs() -> None:
    """A mount namespace with a sysfs of the current network namespace: /sys/class/net
    shows the links of the namespace that mounted sysfs, not the reader's (as `ip netns
    exec` does it)."""
    sc.unshare(sc.CLONE_NEWNS)
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    sc.mount("sysfs", "/sys", "sysfs", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)


def _new_netns() -> None:
    sc.unshare(sc.CLONE_NEWNET)
    _own_sysfs()
    loopback_up()


def in_netns(fn: Callable[[], T]) -> T:
    """``fn()`` in a new network namespace (a forked child); its result."""
    return _forked(fn, _new_netns)


def run_in(pid: int, fn: Callable[[], T]) -> T:
    """``fn()`` in the network namespace of ``pid`` (a forked child); its result."""

    def enter() -> None:
        fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
        sc.setns(fd, sc.CLONE_NEWNET)
        os.close(fd)
        _own_sysfs()

    return _forked(fn, enter)


class Container:
    """A process in its own network namespace, like a container's PID 1 waiting for "go";
    after go() it serves ``port`` (TCP: it answers each connection with its eth0 address
    and closes; UDP: it echoes) or just waits."""

    def __init__(self, port: int | None = None, udp: bool = False) -> None:
        ready_r, ready_w = os.pipe()
        self.go_r, self.go_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            try:
                os.close(ready_r)
                sc.unshare(sc.CLONE_NEWNET)
                os.write(ready_w, b"r")
                os.read(self.go_r, 1)
                if port is not None:
                    serve(port, udp)
                while True:
                    time.sleep(60)
            finally:
                os._exit(0)
        os.close(ready_w)
        assert os.read(ready_r, 1) == b"r"
        os.close(ready_r)

    def go(self) -> None:
        os.write(self.go_w, b"g")

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def serve(port: int, udp: bool) -> None:
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    s = socket.socket(socket.AF_INET, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    if udp:
        while True:
            data, peer = s.recvfrom(512)
            s.sendto(b"echo " + data, peer)
    s.listen(8)
    while True:
        conn, _ = s.accept()
        conn.sendall(conn.getsockname()[0].encode())
        conn.close()


def fetch(address: str, port: int, timeout: float = 3.0) -> str:
    """What the server at address:port says (TCP); refused connections are retried until
    ``timeout`` (the server may be starting)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((address, port), timeout=timeout) as s:
                return s.recv(512).decode()
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def links() -> list[str]:
    """The links of this network namespace (SIOCGIFNAME through if_nameindex)."""
    return sorted(name for _, name in socket.if_nameindex())


def nft_ruleset() -> str:
    import subprocess

    return subprocess.run(
        ["nft", "list", "ruleset"], capture_output=True, text=True, check=True
    ).stdout


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


# -- the helpers themselves ------------------------------------------------------------------


def test_in_netns_is_not_the_hosts_namespace() -> None:
    ours = os.readlink("/proc/self/ns/net")
    theirs, names, sysfs = in_netns(
        lambda: (os.readlink("/proc/self/ns/net"), links(), os.listdir("/sys/class/net"))
    )
    assert theirs != ours
    assert names == sysfs == ["lo"]


def test_a_failure_in_the_child_fails_the_test() -> None:
    def boom() -> None:
        raise ValueError("boom")

    try:
        in_netns(boom)
    except AssertionError as e:
        assert "ValueError: boom" in str(e)
    else:
        raise AssertionError("the child's failure was lost")
