"""``attach``: a container on the bridge, between its PID 1 existing (in its own network
namespace, waiting for "go") and its first instruction.

Under the lease lock: the published ports are checked against other containers' leases and
bound once more on the host; the lease is written (before anything it names exists); the
bridge and the nft table are made if missing; the veth pair; eth0 inside; the DNAT rules.
Any failure removes what was made (cleanup.teardown) and raises NetworkError.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from runtime.network.cleanup import owner_alias, teardown
from runtime.network.ipam import LeaseBook, NetworkConfig, NetworkError, leases
from runtime.network.ports import PortSpec, PublishError, check_ports_free, clashes

_ID = re.compile(r"[0-9a-f]{12,64}")


@dataclass(frozen=True)
class Attachment:
    """A container on the bridge: its address, the gateway, the host-side veth."""

    container_id: str
    address: str
    prefixlen: int
    gateway: str
    veth: str
    bridge: str
    ports: tuple[PortSpec, ...]


def _check_ports(book: LeaseBook, container_id: str, publish: Sequence[PortSpec]) -> None:
    for spec in publish:
        for other in book.leases.values():
            if other.container_id == container_id:
                continue
            for taken in other.ports:
                if clashes(spec, taken):
                    why = (f"host port {spec.host_port}/{spec.protocol} is already published "
                           f"by container {other.container_id[:12]}")  # fmt: skip
                    raise PublishError(str(spec), why, "a free host port")
    check_ports_free(publish)


def check_publish(publish: Sequence[PortSpec], state_dir: str) -> None:
    """Before anything is created: PublishError when a host port is published by another
    container of this state directory or bound by a socket of this host."""
    if not publish:
        return
    with leases(state_dir) as book:
        _check_ports(book, "", publish)


def attach(
    container_id: str,
    pid: int,
    publish: Sequence[PortSpec],
    state_dir: str,
    config: NetworkConfig | None = None,
) -> Attachment:
    """Put the container whose PID 1 is ``pid`` on the bridge (see the module docstring)."""
    if not _ID.fullmatch(container_id):
        raise NetworkError(f"container id {container_id!r}: allowed 12 to 64 hex digits")
    config = config or NetworkConfig.from_env()
    from runtime.network import bridge, firewall
    from runtime.network.bridge import IPRoute, NetlinkError

    with leases(state_dir) as book:
        _check_ports(book, container_id, publish)
        lease = book.allocate(container_id, config, tuple(publish))
        book.save()
        try:
            with IPRoute() as ipr:
                index = bridge.ensure_bridge(ipr, config, owner_alias(state_dir))
                firewall.ensure_table(config)
                bridge.add_veth(ipr, index, lease, pid)
            bridge.configure_inside(pid, lease)
            table = firewall.table_name(config.bridge)
            firewall.add_port_rules(table, container_id, lease.address, lease.ports)
        except BaseException as e:
            teardown(book, [container_id], config)
            if isinstance(e, NetlinkError):
                raise NetworkError(f"bridge network of pid {pid}: {e}") from None
            if isinstance(e, OSError):
                raise NetworkError(f"bridge network of pid {pid}: {e}") from None
            raise
    return Attachment(container_id, lease.address, config.subnet.prefixlen,
                      str(config.gateway), lease.veth, config.bridge, lease.ports)  # fmt: skip


def attach_from_state(state_dir: str, container_id: str, pid: int) -> None:
    """The starter's hook (runtime.container.starter.starter_main): attach with the
    published ports of the container's config.json."""
    from runtime.container.state import StateStore

    spec = StateStore(state_dir).get(container_id).spec
    attach(container_id, pid, spec.publish, state_dir)
