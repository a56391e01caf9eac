"""Bridge networking for corral containers (`corral run --network bridge`, `-p/--publish`).

A bridge (corral0, 10.88.0.1/16 by default) with a veth pair per container, addresses from
a file-locked lease file under the state directory (ipam.py), published ports as DNAT rules
in corral's own nftables table (firewall.py), cleanup on exit and after a crash
(cleanup.py). Netlink through pyroute2 (bridge.py), imported only by the functions that
need it: this package, ports.py and ipam.py stay light for the CLI.

    attach(container_id, pid, publish, state_dir) -> Attachment
    detach(container_id, state_dir)                      # idempotent
    reconcile(state_dir, live_ids) -> list[str]          # `corral ps`
    parse_publish(text) -> PortSpec
    check_publish(specs, state_dir)                      # before anything is created
"""

from runtime.network.attach import Attachment, attach, attach_from_state, check_publish
from runtime.network.cleanup import detach, reconcile
from runtime.network.ipam import NetworkConfig, NetworkError
from runtime.network.ports import (
    PUBLISH_FORM,
    PortSpec,
    PublishError,
    check_ports_free,
    parse_publish,
    parse_publish_all,
)

__all__ = [
    "PUBLISH_FORM",
    "Attachment",
    "NetworkConfig",
    "NetworkError",
    "PortSpec",
    "PublishError",
    "attach",
    "attach_from_state",
    "check_ports_free",
    "check_publish",
    "detach",
    "parse_publish",
    "parse_publish_all",
    "reconcile",
]
