"""Bridge networking in the machine (its network namespace is the VM's own, so the tests may
use it): busybox containers on corral0 ping each other and the host, a published busybox
httpd answers on the host's 127.0.0.1, and rm leaves no veth, no nft rule, no lease.
Through the real CLI (a subprocess), as a person would run it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import test_container_limits_enforced as run_tests
from test_container_limits_enforced import Corral

from runtime.rootfs.busybox import build_busybox

corral = run_tests.corral  # the fixture: a state directory and cgroup parent per test


@pytest.fixture(scope="module")
def rootfs() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="corral-kernel-net-", dir="/tmp"))
    build_busybox(str(base / "rootfs"))
    (base / "rootfs" / "www").mkdir()
    (base / "rootfs" / "www" / "index.html").write_text("hello from corral\n")
    yield base / "rootfs"
    shutil.rmtree(base)


def leases(c: Corral) -> dict[str, dict[str, object]]:
    path = c.state_dir / "network" / "leases.json"
    if not path.exists():
        return {}
    found: dict[str, dict[str, object]] = json.loads(path.read_text())["leases"]
    return found


@pytest.fixture(autouse=True)
def bridge_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """conftest runs every other test with --network none; these run with root's default,
    the bridge, as a person would (the machine's network namespace is throwaway)."""
    monkeypatch.setenv("CORRAL_NETWORK", "bridge")


def corral_links() -> list[str]:
    return sorted(n for _, n in socket.if_nameindex() if n.startswith(("crl", "corral")))


def nft_table() -> str:
    done = subprocess.run(["nft", "list", "table", "ip", "corral"], capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else ""


def nothing_left(c: Corral) -> None:
    assert leases(c) == {}
    assert corral_links() == []
    assert nft_table() == ""


def test_containers_on_the_bridge_ping_each_other_and_the_host(
    corral: Corral,
    rootfs: Path,
) -> None:
    first = corral.ok("run", "-d", "--name", "one", str(rootfs), "--", "sleep", "600").strip()
    try:
        address = str(leases(corral)[first]["address"])
        assert address == "10.88.0.2"  # the default: bridge, for root
        assert corral_links() == ["corral0", f"crl{first[:12]}"]
        script = f"ip -4 -o addr show eth0; ping -c1 -W5 {address} && ping -c1 -W5 10.88.0.1"
        out = corral.run(
            "run", "--rm", "--network", "bridge", str(rootfs), "--", "sh", "-c", script
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert "inet 10.88.0.3/16" in out.stdout
        assert out.stdout.count("1 packets received") == 2
        ping = ["busybox", "ping", "-c1", "-W5", address]  # the host has no iputils ping
        subprocess.run(ping, check=True, capture_output=True)
    finally:
        corral.ok("rm", "-f", "one")
    nothing_left(corral)


def get(url: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                return str(answer.read().decode())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_a_published_httpd_answers_on_the_hosts_loopback_and_rm_leaves_nothing(
    corral: Corral,
    rootfs: Path,
) -> None:
    cid = corral.ok(
        "run", "-d", "--name", "web", "-p", "18080:8080", str(rootfs), "--",
        "httpd", "-f", "-p", "8080", "-h", "/www",
    ).strip()  # fmt: skip
    try:
        assert get("http://127.0.0.1:18080/index.html") == "hello from corral\n"
        assert get("http://10.88.0.1:18080/index.html") == "hello from corral\n"
        assert f"corral:{cid}" in nft_table()
        taken = corral.run("run", "-p", "18080:80", str(rootfs), "--", "true")
        assert taken.returncode == 125
        assert "host port 18080/tcp is already published by container" in taken.stderr
        assert list(leases(corral)) == [cid]
    finally:
        corral.ok("rm", "-f", "web")
    nothing_left(corral)


def test_ps_reconciles_after_the_shim_crashed(corral: Corral, rootfs: Path) -> None:
    """A crash: the shim is SIGKILLed (nothing records the exit or detaches the network),
    then the container dies. `corral ps` finds the shim gone and removes the lease, the
    nft rules and the bridge."""
    cid = corral.ok("run", "-d", "-p", "18081:80", str(rootfs), "--", "sleep", "600").strip()
    state = corral.state(cid)
    os.kill(state["shim_pid"], signal.SIGKILL)
    os.kill(state["pid"], signal.SIGKILL)
    assert f"corral:{cid}" in nft_table()
    assert list(leases(corral)) == [cid]
    corral.ok("ps")
    nothing_left(corral)
    corral.ok("rm", cid)
