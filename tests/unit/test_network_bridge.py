"""attach, detach and reconcile against the real kernel (rtnetlink, nftables), each test in a
network namespace it creates (test_network_netns.in_netns plays the host; Container plays a
container's PID 1 in a namespace of its own)."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest
from test_network_netns import Container, fetch, in_netns, links, nft_ruleset, run_in

from runtime.network import (
    NetworkConfig,
    NetworkError,
    PublishError,
    attach,
    check_publish,
    detach,
    parse_publish,
    reconcile,
)

ID_A = "a" * 12 + "0" * 52
ID_B = "b" * 12 + "1" * 52


def nothing_left(state: str) -> None:
    """No corral link, no nft table, no lease file."""
    assert [n for n in links() if n.startswith(("crl", "corral"))] == []
    assert "corral" not in nft_ruleset()
    assert not os.path.exists(os.path.join(state, "network", "leases.json"))


def inside_view() -> tuple[list[str], str, str]:
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    addrs = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    return links(), routes, addrs


def test_a_container_gets_eth0_an_address_and_a_default_route(tmp_path: Path) -> None:
    state = str(tmp_path)

    def check() -> None:
        c = Container()
        try:
            a = attach(ID_A, c.pid, [], state)
            assert (a.address, a.gateway, a.prefixlen) == ("10.88.0.2", "10.88.0.1", 16)
            names, routes, addrs = run_in(c.pid, inside_view)
            assert names == ["eth0", "lo"]
            assert "default via 10.88.0.1 dev eth0" in routes
            assert "inet 10.88.0.2/16" in addrs
            master = os.path.basename(os.readlink(f"/sys/class/net/{a.veth}/master"))
            assert master == "corral0"
            assert Path("/proc/sys/net/ipv4/conf/corral0/route_localnet").read_text() == "1\n"
            assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == "1\n"
        finally:
            c.kill()
            detach(ID_A, state)
        nothing_left(state)
        detach(ID_A, state)  # idempotent

    in_netns(check)


def test_containers_reach_each_other_and_the_host(tmp_path: Path) -> None:
    state = str(tmp_path)

    def check() -> None:
        server, client = Container(port=8080), Container()
        host = socket.socket()
        try:
            b = attach(ID_B, server.pid, [], state)
            attach(ID_A, client.pid, [], state)
            server.go()
            host.bind(("10.88.0.1", 9090))
            host.listen(1)
            assert run_in(client.pid, lambda: fetch(b.address, 8080)) == b.address
            run_in(client.pid, lambda: socket.create_connection(("10.88.0.1", 9090), 3).close())
            assert fetch(b.address, 8080) == b.address  # the host reaches a container
        finally:
            host.close()
            server.kill()
            client.kill()
            detach(ID_A, state)
            detach(ID_B, state)
        nothing_left(state)

    in_netns(check)


def test_a_published_port_answers_on_the_hosts_loopback_and_addresses(tmp_path: Path) -> None:
    state = str(tmp_path)

    def check() -> None:
        c = Container(port=8080)
        try:
            a = attach(ID_A, c.pid, [parse_publish("18080:8080")], state)
            c.go()
            assert fetch("127.0.0.1", 18080) == a.address
            assert fetch("10.88.0.1", 18080) == a.address
            assert f"dnat to {a.address}:8080" in nft_ruleset()
        finally:
            c.kill()
            detach(ID_A, state)
        nothing_left(state)

    in_netns(check)


def udp_echo(address: str, port: int) -> bytes:
    """The answer to "hi", sent again every 0.2 s until the server (just started) answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        for _ in range(25):
            s.sendto(b"hi", (address, port))
            try:
                return s.recv(64)
            except (TimeoutError, ConnectionRefusedError):
                continue
    raise AssertionError(f"no answer from {address}:{port}/udp")


def test_a_udp_port_is_published_too(tmp_path: Path) -> None:
    state = str(tmp_path)

    def check() -> None:
        c = Container(port=5353, udp=True)
        try:
            attach(ID_A, c.pid, [parse_publish("127.0.0.1:15353:5353/udp")], state)
            c.go()
            assert udp_echo("127.0.0.1", 15353) == b"echo hi"
        finally:
            c.kill()
            detach(ID_A, state)
        nothing_left(state)

    in_netns(check)


def test_a_port_taken_on_the_host_is_refused_and_nothing_is_left(tmp_path: Path) -> None:
    state = str(tmp_path)

    def check() -> None:
        busy = socket.socket()
        busy.bind(("127.0.0.1", 18080))
        busy.listen(1)
        c = Container()
        try:
            spec = [parse_publish("18080:8080")]
            expected = (
                "-p/--publish '18080:8080/tcp': host port 18080/tcp is already in use on "
                "0.0.0.0; allowed: a free host port"
            )
            with pytest.raises(PublishError) as before:
                check_publish(spec, state)
            assert str(before.value) == expected
            with pytest.raises(PublishError) as during:
                attach(ID_A, c.pid, spec, state)
            assert str(during.value) == expected
            assert run_in(c.pid, links) == ["lo"]
        finally:
            busy.close()
            c.kill()
        nothing_left(state)

    in_netns(check)


def test_a_port_published_by_another_container_is_refused(tmp_path: Path) -> None:
    state = str(tmp_path)

    def check() -> None:
        first, second = Container(), Container()
        try:
            attach(ID_A, first.pid, [parse_publish("18080:8080")], state)
            with pytest.raises(PublishError) as e:
                check_publish([parse_publish("127.0.0.1:18080:80")], state)
            assert str(e.value) == (
                "-p/--publish '127.0.0.1:18080:80/tcp': host port 18080/tcp is already "
                "published by container aaaaaaaaaaaa; allowed: a free host port"
            )
            with pytest.raises(PublishError):
                attach(ID_B, second.pid, [parse_publish("18080:80")], state)
            assert not os.path.exists(f"/sys/class/net/crl{ID_B[:12]}")
        finally:
            first.kill()
            second.kill()
            detach(ID_A, state)
            detach(ID_B, state)
        nothing_left(state)

    in_netns(check)


def test_reconcile_after_a_crash_removes_what_belongs_to_the_dead(tmp_path: Path) -> None:
    """Simulated crash: two containers attached, the runtime never detached either; one
    died. reconcile keeps the live one's link, rules and lease and removes the other's."""
    state = str(tmp_path)

    def check() -> None:
        dead, alive = Container(), Container(port=8080)
        try:
            attach(ID_A, dead.pid, [parse_publish("18081:8080")], state)
            b = attach(ID_B, alive.pid, [parse_publish("18080:8080")], state)
            alive.go()
            dead.kill()  # its veth goes with its namespace; rules and lease stay
            assert f"corral:{ID_A}" in nft_ruleset()
            assert reconcile(state, {ID_B}) == [ID_A]
            assert f"corral:{ID_A}" not in nft_ruleset()
            assert fetch("127.0.0.1", 18080) == b.address
            assert reconcile(state, {ID_B}) == []
            assert reconcile(state, set()) == [ID_B]  # the live one died too
            assert reconcile(state, set()) == []
        finally:
            dead.kill()
            alive.kill()
        nothing_left(state)

    in_netns(check)


def test_reconcile_removes_a_veth_and_rules_that_no_lease_names(tmp_path: Path) -> None:
    """A crash can leave the lease file out of step (restored from a backup, edited):
    veths on corral's bridge and rules in its table that no lease names are removed."""
    state = str(tmp_path)

    def check() -> None:
        keep, stray = Container(), Container()
        try:
            attach(ID_B, keep.pid, [], state)
            attach(ID_A, stray.pid, [parse_publish("18080:80")], state)
            leases = Path(state, "network", "leases.json")
            text = leases.read_text()
            import json

            data = json.loads(text)
            del data["leases"][ID_A]
            leases.write_text(json.dumps(data))
            removed = reconcile(state, {ID_B})
            assert set(removed) == {ID_A, ID_A[:12]}
            assert not os.path.exists(f"/sys/class/net/crl{ID_A[:12]}")
            assert os.path.exists(f"/sys/class/net/crl{ID_B[:12]}")
            assert f"corral:{ID_A}" not in nft_ruleset()
        finally:
            keep.kill()
            stray.kill()
            detach(ID_B, state)
        nothing_left(state)

    in_netns(check)


def test_a_subnet_colliding_with_a_route_is_refused(tmp_path: Path) -> None:
    state = str(tmp_path)

    def check() -> None:
        for command in (
            "link add d0 type veth peer name d1", "addr add 10.88.5.1/24 dev d0",
            "link set d0 up", "link set d1 up",
        ):  # fmt: skip
            subprocess.run(["ip", *command.split()], check=True)
        c = Container()
        try:
            with pytest.raises(NetworkError) as e:
                attach(ID_A, c.pid, [], state)
            assert str(e.value) == (
                "subnet 10.88.0.0/16 collides with the host's route to 10.88.5.0/24 on d0: "
                "choose another subnet with CORRAL_SUBNET (e.g. 10.89.0.0/16)"
            )
            nothing_left(state)
            other = NetworkConfig.make("corral1", "10.89.0.0/16")
            a = attach(ID_A, c.pid, [parse_publish("18080:80")], state, other)
            assert a.address == "10.89.0.2"
            assert "table ip corral_corral1" in nft_ruleset()
            detach(ID_A, state, other)
            assert [n for n in links() if n.startswith(("crl", "corral"))] == []
            assert "corral" not in nft_ruleset()
        finally:
            c.kill()

    in_netns(check)


def test_a_bridge_of_another_state_directory_is_not_taken_over(tmp_path: Path) -> None:
    def check() -> None:
        first, second = Container(), Container()
        try:
            attach(ID_A, first.pid, [], str(tmp_path / "one"))
            with pytest.raises(NetworkError, match="bridge corral0 exists and belongs to"):
                attach(ID_B, second.pid, [], str(tmp_path / "two"))
            assert reconcile(str(tmp_path / "two"), set()) == []
            assert os.path.exists(f"/sys/class/net/crl{ID_A[:12]}")
        finally:
            first.kill()
            second.kill()
            detach(ID_A, str(tmp_path / "one"))
        nothing_left(str(tmp_path / "one"))

    in_netns(check)


def test_a_bad_container_id_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NetworkError, match="container id 'x/y': allowed 12 to 64 hex digits"):
        attach("x/y", 1, [], str(tmp_path))
