"""Addresses for containers on the bridge: a lease file under the state directory.

``<state>/network/leases.json`` maps a container id to its lease (address, host-side veth,
published ports, the bridge and subnet it was made on). Every reader and writer holds an
exclusive flock(2) on ``<state>/network/leases.lock`` for the whole read-modify-write, and
writes go to a temporary file that is fsync'd and renamed over the old one, so the file
survives a crash or a restart whole. A lease is written before anything it names is made
and removed after everything it names is gone, so "no lease" means "nothing to clean".

The network: bridge ``corral0`` with 10.88.0.1 on 10.88.0.0/16 (podman's default subnet),
overridable with CORRAL_BRIDGE and CORRAL_SUBNET. The gateway is the subnet's first host
address; containers get the lowest free one after it.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from runtime.network.ports import PortSpec

DEFAULT_BRIDGE = "corral0"
DEFAULT_SUBNET = "10.88.0.0/16"
BRIDGE_FORM = "1-15 characters of [a-zA-Z0-9_.-] (IFNAMSIZ)"
SUBNET_FORM = "an IPv4 network of /8 to /29, e.g. 10.88.0.0/16"
_IFNAME = re.compile(r"[a-zA-Z0-9_.-]{1,15}")


class NetworkError(Exception):
    """Bridge networking could not be set up or torn down; says what and why."""


@dataclass(frozen=True)
class NetworkConfig:
    """The bridge and its subnet (the gateway, on the bridge, is the first host address)."""

    bridge: str = DEFAULT_BRIDGE
    subnet: ipaddress.IPv4Network = field(
        default_factory=lambda: ipaddress.IPv4Network(DEFAULT_SUBNET)
    )

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return self.subnet.network_address + 1

    @classmethod
    def make(cls, bridge: str, subnet: str) -> NetworkConfig:
        """Checked values; NetworkError naming the one that is wrong."""
        if not _IFNAME.fullmatch(bridge) or bridge in (".", ".."):
            raise NetworkError(f"bridge name {bridge!r}: allowed {BRIDGE_FORM}")
        try:
            network = ipaddress.IPv4Network(subnet)
        except ValueError as e:
            raise NetworkError(f"subnet {subnet!r}: {e}; allowed {SUBNET_FORM}") from None
        if not 8 <= network.prefixlen <= 29:
            raise NetworkError(f"subnet {subnet!r}: prefix /{network.prefixlen}; "
                               f"allowed {SUBNET_FORM}")  # fmt: skip
        return cls(bridge, network)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> NetworkConfig:
        env = os.environ if env is None else env
        return cls.make(
            env.get("CORRAL_BRIDGE", DEFAULT_BRIDGE), env.get("CORRAL_SUBNET", DEFAULT_SUBNET)
        )


def host_veth(container_id: str) -> str:
    """The host end of a container's veth pair: "crl" + 12 hex digits (15, IFNAMSIZ - 1)."""
    return "crl" + container_id[:12]


@dataclass(frozen=True)
class Lease:
    container_id: str
    address: str
    veth: str
    bridge: str
    subnet: str
    ports: tuple[PortSpec, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "address": self.address, "veth": self.veth, "bridge": self.bridge,
            "subnet": self.subnet, "ports": [p.to_dict() for p in self.ports],
        }  # fmt: skip

    @classmethod
    def from_dict(cls, container_id: str, d: Any) -> Lease:
        try:
            ports = tuple(PortSpec.from_dict(p) for p in d["ports"])
            return cls(container_id, str(d["address"]), str(d["veth"]), str(d["bridge"]),
                       str(d["subnet"]), ports)  # fmt: skip
        except (KeyError, TypeError, ValueError) as e:
            raise NetworkError(f"lease of container {container_id} is malformed: {e}") from None


class LeaseBook:
    """The leases, loaded under the lock; ``save`` writes them back atomically."""

    def __init__(self, path: str, leases: dict[str, Lease]) -> None:
        self.path = path
        self.leases = leases

    def allocate(
        self, container_id: str, config: NetworkConfig, ports: tuple[PortSpec, ...]
    ) -> Lease:
        """The container's lease (the same one when it has one already): the lowest free
        address of the subnet after the gateway; NetworkError when none is left."""
        if container_id in self.leases:
            return self.leases[container_id]
        taken = {ipaddress.IPv4Address(lease.address) for lease in self.leases.values()}
        for address in config.subnet.hosts():
            if address != config.gateway and address not in taken:
                lease = Lease(container_id, str(address), host_veth(container_id),
                              config.bridge, str(config.subnet), ports)  # fmt: skip
                self.leases[container_id] = lease
                return lease
        raise NetworkError(
            f"no free address in {config.subnet}: all {len(taken)} are leased to containers; "
            "remove stopped containers (`corral ps` reclaims the leases of containers that "
            "are gone) or choose a larger subnet with CORRAL_SUBNET"
        )

    def release(self, container_id: str) -> Lease | None:
        return self.leases.pop(container_id, None)

    def save(self) -> None:
        data = {cid: lease.to_dict() for cid, lease in sorted(self.leases.items())}
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as f:
            json.dump({"version": 1, "leases": data}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, self.path)


def network_dir(state_dir: str) -> str:
    return os.path.join(state_dir, "network")


def has_leases_file(state_dir: str) -> bool:
    return os.path.exists(os.path.join(network_dir(state_dir), "leases.json"))


@contextlib.contextmanager
def leases(state_dir: str) -> Iterator[LeaseBook]:
    """The lease book under an exclusive flock on leases.lock (held until the block ends)."""
    directory = network_dir(state_dir)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
    lock = os.open(os.path.join(directory, "leases.lock"), flags, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = os.path.join(directory, "leases.json")
        yield LeaseBook(path, _load(path))
    finally:
        os.close(lock)


def _load(path: str) -> dict[str, Lease]:
    try:
        with open(path) as f:
            raw = json.load(f)
    except FileNotFoundError:
        return {}
    except ValueError as e:
        why = f"not a lease file ({e}); move it away to start afresh"
        raise NetworkError(f"{path}: {why}") from None
    entries = raw.get("leases") if isinstance(raw, dict) else None
    if not isinstance(entries, dict):
        raise NetworkError(f'{path}: no "leases" object; move it away to start afresh')
    return {cid: Lease.from_dict(cid, d) for cid, d in entries.items()}
