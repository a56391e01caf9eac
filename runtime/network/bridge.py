"""The bridge and the veth pairs, over rtnetlink (pyroute2's IPRoute).

    bridge  ip link add corral0 type bridge; 10.88.0.1/16 on it; up; route_localnet=1 on it
            (firewall.py says why); net.ipv4.ip_forward=1 (left on when the bridge goes,
            as docker and netavark do)
    veth    ip link add crlID12 type veth peer name cvpID12; the host end enslaved to the
            bridge and up; the peer moved into the container's network namespace by the
            pid of its PID 1 (IFLA_NET_NS_PID)
    inside  a forked child setns(2)s into /proc/PID/ns/net (a netlink socket belongs to the
            namespace it was opened in) and renames the peer eth0, adds the address, brings
            it and lo up and adds the default route via the gateway

The veth pair dies with the container's network namespace: the kernel deletes both ends
when the peer's namespace goes. delete_link is for everything else (and idempotent).
"""

from __future__ import annotations

import ipaddress
import os
import sys

if sys.flags.no_site:  # the shim's helpers run `python -I -S`: no site-packages on sys.path
    import site

    site.main()

from pyroute2 import IPRoute  # type: ignore[import-untyped]
from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]

from runtime import syscalls as sc
from runtime.network.ipam import Lease, NetworkConfig, NetworkError

__all__ = ["IPRoute", "NetlinkError"]

CONTAINER_IFNAME = "eth0"


def _sysctl(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def check_subnet_free(ipr: IPRoute, config: NetworkConfig) -> None:
    """NetworkError when a route of the main table (other than the default route and the
    bridge's own) overlaps the subnet: containers would shadow or be shadowed by it."""
    for route in ipr.get_routes(family=2, table=254):
        length = route["dst_len"]
        if length == 0:
            continue
        dst = ipaddress.IPv4Network(f"{route.get_attr('RTA_DST')}/{length}", strict=False)
        index = route.get_attr("RTA_OIF")
        device = ipr.get_links(index)[0].get_attr("IFLA_IFNAME") if index else "?"
        if dst.overlaps(config.subnet) and device != config.bridge:
            raise NetworkError(
                f"subnet {config.subnet} collides with the host's route to {dst} on {device}: "
                "choose another subnet with CORRAL_SUBNET (e.g. 10.89.0.0/16)"
            )


def ensure_bridge(ipr: IPRoute, config: NetworkConfig, owner: str) -> int:
    """The bridge's index, made (with its address, and ``owner`` as its alias) unless it
    exists; it is up and route_localnet and ip_forward are on either way. NetworkError when
    the bridge exists with another owner (another state directory, or not corral's)."""
    found = ipr.link_lookup(ifname=config.bridge)
    if found:
        index = int(found[0])
        alias = ipr.get_links(index)[0].get_attr("IFLA_IFALIAS")
        if alias != owner:
            raise NetworkError(
                f"bridge {config.bridge} exists and belongs to {alias or 'something else'}, "
                f"not {owner}: choose another bridge and subnet with CORRAL_BRIDGE and "
                "CORRAL_SUBNET"
            )
    else:
        check_subnet_free(ipr, config)
        ipr.link("add", ifname=config.bridge, kind="bridge")
        index = int(ipr.link_lookup(ifname=config.bridge)[0])
        ipr.link("set", index=index, ifalias=owner)
    gateway = str(config.gateway)
    if not any(a.get_attr("IFA_ADDRESS") == gateway for a in ipr.get_addr(index=index)):
        ipr.addr("add", index=index, address=gateway, prefixlen=config.subnet.prefixlen)
    ipr.link("set", index=index, state="up")
    _sysctl(f"/proc/sys/net/ipv4/conf/{config.bridge}/route_localnet", "1")
    _sysctl("/proc/sys/net/ipv4/ip_forward", "1")
    return index


def peer_name(container_id: str) -> str:
    return "cvp" + container_id[:12]


def add_veth(ipr: IPRoute, bridge: int, lease: Lease, pid: int) -> None:
    """The veth pair: host end on the bridge and up, peer in PID's network namespace."""
    peer = peer_name(lease.container_id)
    ipr.link("add", ifname=lease.veth, kind="veth", peer={"ifname": peer})
    host = int(ipr.link_lookup(ifname=lease.veth)[0])
    ipr.link("set", index=host, master=bridge, state="up")
    try:
        ipr.link("set", index=int(ipr.link_lookup(ifname=peer)[0]), net_ns_pid=pid)
    except NetlinkError as e:
        raise NetworkError(f"cannot move {peer} into the network namespace of pid {pid}: "
                           f"{os.strerror(e.code)}") from None  # fmt: skip


def configure_inside(pid: int, lease: Lease) -> None:
    """eth0, its address, lo and the default route in PID's network namespace, from a
    forked child (this process stays in its own namespace)."""
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read)
        code = 1
        try:
            _configure(pid, lease)
            code = 0
        except BaseException as e:
            os.write(write, str(e).encode()[:4000])
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        message = f.read().decode(errors="replace")
    status = os.waitpid(child, 0)[1]
    if os.waitstatus_to_exitcode(status) != 0:
        raise NetworkError(f"configuring {CONTAINER_IFNAME} of pid {pid}: {message or status}")


def _configure(pid: int, lease: Lease) -> None:
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    sc.setns(fd, sc.CLONE_NEWNET)
    os.close(fd)
    subnet = ipaddress.IPv4Network(lease.subnet)
    with IPRoute() as ipr:
        index = int(ipr.link_lookup(ifname=peer_name(lease.container_id))[0])
        ipr.link("set", index=index, ifname=CONTAINER_IFNAME)
        ipr.addr("add", index=index, address=lease.address, prefixlen=subnet.prefixlen)
        ipr.link("set", index=index, state="up")
        ipr.link("set", index=int(ipr.link_lookup(ifname="lo")[0]), state="up")
        ipr.route("add", dst="0.0.0.0/0", gateway=str(subnet.network_address + 1))


def delete_link(ipr: IPRoute, name: str) -> bool:
    """Delete the link if it exists (ENODEV: it went meanwhile); True when it was there."""
    found = ipr.link_lookup(ifname=name)
    if not found:
        return False
    try:
        ipr.link("del", index=int(found[0]))
    except NetlinkError as e:
        if e.code != 19:  # ENODEV
            raise
    return True


def bridge_ports(ipr: IPRoute, bridge: str) -> list[str]:
    """The names of the links enslaved to ``bridge`` (none when it does not exist)."""
    found = ipr.link_lookup(ifname=bridge)
    if not found:
        return []
    return [
        str(link.get_attr("IFLA_IFNAME"))
        for link in ipr.get_links()
        if link.get_attr("IFLA_MASTER") == found[0]
    ]
