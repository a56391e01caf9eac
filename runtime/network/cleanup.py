"""Undoing bridge networking: ``detach`` (one container, on exit or rm) and ``reconcile``
(after a crash: everything that belongs to containers that are gone). Both are idempotent.

Order matters for crash safety: the veth, then the nft rules, then the lease (a lease is
the last thing to go, so a crash half-way leaves a lease that the next reconcile finds).
When the last lease goes, the bridge and the nft table go too (netavark removes an unused
bridge the same way); ip_forward stays on.

The bridge records the state directory that owns it in its alias (IFLA_IFALIAS,
"corral:STATE_DIR"): reconcile removes links and rules it has no lease for only on a bridge
it owns, so two state directories never tear down each other's containers.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable

from runtime.network.ipam import (
    Lease,
    LeaseBook,
    NetworkConfig,
    has_leases_file,
    host_veth,
    leases,
)


def owner_alias(state_dir: str) -> str:
    return "corral:" + os.path.realpath(state_dir)


def teardown(book: LeaseBook, container_ids: Iterable[str], config: NetworkConfig) -> None:
    """Every link, rule and lease of these containers (under the book's lock); then the
    bridge and the table when no lease is left."""
    from runtime.network import bridge, firewall
    from runtime.network.bridge import IPRoute

    ids = set(container_ids)
    gone: list[Lease] = [book.leases[i] for i in ids if i in book.leases]
    bridges = {lease.bridge for lease in gone} | {config.bridge}
    with IPRoute() as ipr:
        for cid in ids:
            lease = book.leases.get(cid)
            bridge.delete_link(ipr, lease.veth if lease else host_veth(cid))
        for name in bridges:
            firewall.delete_rules(firewall.table_name(name), ids)
        for cid in ids:
            book.release(cid)
        book.save()
        if not book.leases:  # "no lease file" is detach's and reconcile's fast path
            os.unlink(book.path)
        used = {lease.bridge for lease in book.leases.values()}
        for name in bridges - used:
            if not bridge.bridge_ports(ipr, name):
                firewall.delete_table(firewall.table_name(name))
                bridge.delete_link(ipr, name)


def _link_exists(name: str) -> bool:
    """In this network namespace (SIOCGIFINDEX; /sys/class/net shows the namespace that
    mounted sysfs, which need not be ours)."""
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def detach(container_id: str, state_dir: str, config: NetworkConfig | None = None) -> None:
    """Remove the container's veth, nft rules and lease; nothing to do (and nothing heavy
    imported) when it has none."""
    if not has_leases_file(state_dir) and not _link_exists(host_veth(container_id)):
        return
    config = config or NetworkConfig.from_env()
    with leases(state_dir) as book:
        if container_id in book.leases or _link_exists(host_veth(container_id)):
            teardown(book, [container_id], config)


def reconcile(state_dir: str, live_ids: set[str], config: NetworkConfig | None = None) -> list[str]:
    """Remove what belongs to containers not in ``live_ids``: their leases, and, on a bridge
    this state directory owns, veths and rules that no lease names. The ids (or, for a veth
    alone, the 12-digit prefix in its name) removed."""
    if not has_leases_file(state_dir):
        return []
    config = config or NetworkConfig.from_env()
    from runtime.network import bridge, firewall
    from runtime.network.bridge import IPRoute

    with leases(state_dir) as book:
        known = set(book.leases) | live_ids
        stale = {cid for cid in book.leases if cid not in live_ids}
        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=config.bridge)
            alias = ipr.get_links(found[0])[0].get_attr("IFLA_IFALIAS") if found else None
            if alias == owner_alias(state_dir):
                stale |= firewall.rule_owners(firewall.table_name(config.bridge)) - known
                prefixes = {host_veth(cid) for cid in known}
                for name in bridge.bridge_ports(ipr, config.bridge):
                    if name.startswith("crl") and name not in prefixes:
                        stale.add(name[3:])
        if stale or not book.leases:
            teardown(book, stale, config)
        return sorted(stale)
