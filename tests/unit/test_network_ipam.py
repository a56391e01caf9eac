"""The address allocator: the lease file under the state directory (flock'd, atomic),
surviving restarts, exhaustion, and reclaiming the leases of containers that are gone."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_network_netns import Container, in_netns

from runtime.network import NetworkConfig, NetworkError, attach, parse_publish, reconcile
from runtime.network.ipam import leases

SMALL = NetworkConfig.make("corral0", "10.99.0.0/29")  # .1 gateway, .2-.6 for containers


def cid(n: int) -> str:
    return f"{n:012x}" + "f" * 52


def allocate(state: str, *ids: str, config: NetworkConfig = SMALL) -> list[str]:
    out = []
    with leases(state) as book:
        for i in ids:
            out.append(book.allocate(i, config, ()).address)
        book.save()
    return out


def test_addresses_are_the_lowest_free_after_the_gateway(tmp_path: Path) -> None:
    state = str(tmp_path)
    assert allocate(state, cid(1), cid(2), cid(3)) == ["10.99.0.2", "10.99.0.3", "10.99.0.4"]
    assert allocate(state, cid(2)) == ["10.99.0.3"]  # the same lease again
    with leases(state) as book:
        book.release(cid(2))
        book.save()
    assert allocate(state, cid(4)) == ["10.99.0.3"]


def test_leases_survive_a_restart(tmp_path: Path) -> None:
    state = str(tmp_path)
    ports = (parse_publish("8080:80"),)
    with leases(state) as book:
        lease = book.allocate(cid(1), NetworkConfig(), ports)
        book.save()
    # a new process (a restart) reads the same file back
    read_back = in_netns(lambda: leases(state).__enter__().leases)
    assert read_back == {cid(1): lease}
    assert lease.address == "10.88.0.2" and lease.veth == "crl000000000001"
    assert lease.ports == ports
    saved = json.loads(Path(state, "network", "leases.json").read_text())
    assert saved["leases"][cid(1)]["address"] == "10.88.0.2"


def test_exhaustion_says_what_to_do(tmp_path: Path) -> None:
    state = str(tmp_path)
    allocate(state, *(cid(i) for i in range(5)))
    with pytest.raises(NetworkError) as e:
        allocate(state, cid(9))
    assert str(e.value) == (
        "no free address in 10.99.0.0/29: all 5 are leased to containers; remove stopped "
        "containers (`corral ps` reclaims the leases of containers that are gone) or choose "
        "a larger subnet with CORRAL_SUBNET"
    )
    with leases(state) as book:
        assert cid(9) not in book.leases


def test_concurrent_allocations_never_share_an_address(tmp_path: Path) -> None:
    state = str(tmp_path)
    config = NetworkConfig()
    children = []
    for n in range(8):
        pid = os.fork()
        if pid == 0:
            try:
                for k in range(5):
                    allocate(state, cid(100 * n + k), config=config)
            finally:
                os._exit(0)
        children.append(pid)
    for pid in children:
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    with leases(state) as book:
        addresses = [lease.address for lease in book.leases.values()]
    assert len(addresses) == 40 and len(set(addresses)) == 40


def test_reconcile_reclaims_the_leases_of_containers_that_are_gone(tmp_path: Path) -> None:
    state = str(tmp_path)

    def check() -> list[str]:
        gone, alive = Container(), Container()
        try:
            attach(cid(1), gone.pid, [], state, SMALL)
            attach(cid(2), alive.pid, [], state, SMALL)
            gone.kill()
            removed = reconcile(state, {cid(2)}, SMALL)
            with leases(state) as book:
                assert set(book.leases) == {cid(2)}
                assert book.allocate(cid(3), SMALL, ()).address == "10.99.0.2"  # reused
            return removed
        finally:
            gone.kill()
            alive.kill()
            reconcile(state, set(), SMALL)

    assert in_netns(check) == [cid(1)]
    assert not Path(state, "network", "leases.json").exists()


def test_a_corrupt_lease_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "network" / "leases.json"
    path.parent.mkdir()
    path.write_text("{not json")
    with pytest.raises(NetworkError, match=f"{path}: not a lease file .*move it away"):
        allocate(str(tmp_path), cid(1))
    path.write_text(json.dumps({"leases": {cid(1): {"address": "10.0.0.2"}}}))
    with pytest.raises(NetworkError, match=f"lease of container {cid(1)} is malformed"):
        allocate(str(tmp_path), cid(1))


@pytest.mark.parametrize(
    ("bridge", "subnet", "message"),
    [
        ("a" * 16, "10.88.0.0/16", "bridge name 'aaaaaaaaaaaaaaaa': allowed 1-15 characters"),
        ("br/0", "10.88.0.0/16", "bridge name 'br/0': allowed 1-15 characters"),
        ("corral0", "10.88.0.1/16", "subnet '10.88.0.1/16': 10.88.0.1/16 has host bits set"),
        ("corral0", "10.88.0.0/30", "subnet '10.88.0.0/30': prefix /30; allowed an IPv4"),
        ("corral0", "fd00::/64", "subnet 'fd00::/64': .*; allowed an IPv4 network"),
    ],
)
def test_bad_network_settings_are_refused(bridge: str, subnet: str, message: str) -> None:
    with pytest.raises(NetworkError, match=message):
        NetworkConfig.make(bridge, subnet)


def test_the_environment_chooses_the_network() -> None:
    config = NetworkConfig.from_env({"CORRAL_BRIDGE": "corral1", "CORRAL_SUBNET": "10.89.0.0/24"})
    assert (config.bridge, str(config.subnet), str(config.gateway)) == (
        "corral1", "10.89.0.0/24", "10.89.0.1",
    )  # fmt: skip
    assert NetworkConfig.from_env({}) == NetworkConfig()
