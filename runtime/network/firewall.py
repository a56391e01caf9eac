"""corral's nftables table, ``table ip corral``, driven through the ``nft`` command.

    chain prerouting  (nat, dstnat)   DNAT of published ports arriving from outside
    chain output      (nat, -100)     DNAT of published ports connected to from this host
                                      (127.0.0.1:HOSTPORT included)
    chain postrouting (nat, srcnat)   masquerade: the subnet going elsewhere (outbound),
                                      127.0.0.0/8 sources leaving on the bridge, and
                                      DNATed traffic between containers (hairpin)

A connection to 127.0.0.1:HOSTPORT is DNATed in output to the container's address and then
routed out of the bridge with its loopback source. The kernel drops such packets as martians
unless ``net.ipv4.conf.BRIDGE.route_localnet`` is 1, and the container could not answer
127.0.0.1 anyway: so route_localnet on the bridge (bridge.py) plus masquerade of 127.0.0.0/8
leaving on the bridge, netavark's approach.

A container's rules carry the comment "corral:ID"; they are found again by listing the table
as JSON (``nft -j -a``) and deleted by handle, in one transaction. The table is shared by
every container of the bridge and deleted with the bridge, when the last lease goes.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any

from runtime.network.ipam import DEFAULT_BRIDGE, NetworkConfig, NetworkError
from runtime.network.ports import PortSpec

TABLE = "corral"
COMMENT = "corral:"


def table_name(bridge: str) -> str:
    """``corral`` for the default bridge, ``corral_BRIDGE`` for another (nft identifiers
    allow letters, digits and _)."""
    if bridge == DEFAULT_BRIDGE:
        return TABLE
    return TABLE + "_" + re.sub(r"[^a-zA-Z0-9_]", "_", bridge)


def nft(script: str | None = None, *args: str) -> str:
    """``nft -f -`` with ``script`` on stdin, or ``nft ARGS``; stdout. NetworkError with
    nft's message when it fails."""
    binary = shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")
    if binary is None:
        raise NetworkError("nft (nftables) not found: install the nftables package")
    argv = [binary, *(("-f", "-") if script is not None else args)]
    done = subprocess.run(argv, input=script, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        what = script.strip() if script is not None else " ".join(args)
        raise NetworkError(f"nft failed: {done.stderr.strip()} (running: {what})")
    return done.stdout


def table_exists(table: str) -> bool:
    binary = shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")
    if binary is None:
        return False
    argv = [binary, "list", "table", "ip", table]
    return subprocess.run(argv, capture_output=True, check=False).returncode == 0


def ensure_table(config: NetworkConfig) -> None:
    """The table, its three chains and the shared masquerade rules, made in one transaction
    unless the table exists."""
    subnet, bridge = config.subnet, config.bridge
    table = table_name(bridge)
    if table_exists(table):
        return
    nft(f"""table ip {table} {{
  chain prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}
  chain output {{ type nat hook output priority -100; policy accept; }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {subnet} ip daddr != {subnet} masquerade comment "corral outbound"
    oifname "{bridge}" ip saddr 127.0.0.0/8 masquerade comment "corral localhost"
    oifname "{bridge}" ip saddr {subnet} ct status dnat masquerade comment "corral hairpin"
  }}
}}
""")


def delete_table(table: str) -> None:
    if table_exists(table):
        nft(None, "delete", "table", "ip", table)


def port_rules(table: str, container_id: str, address: str, ports: Sequence[PortSpec]) -> str:
    """The DNAT rules publishing ``ports`` (an nft script)."""
    lines = []
    for p in ports:
        match = f"ip daddr {p.host_ip}" if p.host_ip else "fib daddr type local"
        rule = (f"{match} {p.protocol} dport {p.host_port} dnat to {address}:{p.container_port}"
                f' comment "{COMMENT}{container_id}"')  # fmt: skip
        for chain in ("prerouting", "output"):
            lines.append(f"add rule ip {table} {chain} {rule}\n")
    return "".join(lines)


def add_port_rules(table: str, container_id: str, address: str, ports: Sequence[PortSpec]) -> None:
    if ports:
        nft(port_rules(table, container_id, address, ports))


def _rules(table: str) -> list[dict[str, Any]]:
    if not table_exists(table):
        return []
    listing = json.loads(nft(None, "-j", "-a", "list", "table", "ip", table))
    return [item["rule"] for item in listing.get("nftables", []) if "rule" in item]


def rule_owners(table: str) -> set[str]:
    """The container ids that have rules in the table."""
    owners = set()
    for rule in _rules(table):
        comment = str(rule.get("comment", ""))
        if comment.startswith(COMMENT):
            owners.add(comment[len(COMMENT) :])
    return owners


def delete_rules(table: str, container_ids: set[str]) -> int:
    """Delete every rule of these containers, in one transaction; how many there were."""
    doomed = [
        f"delete rule ip {table} {rule['chain']} handle {rule['handle']}\n"
        for rule in _rules(table)
        if str(rule.get("comment", "")).removeprefix(COMMENT) in container_ids
        and str(rule.get("comment", "")).startswith(COMMENT)
    ]
    if doomed:
        nft("".join(doomed))
    return len(doomed)
