"""`-p/--publish [IP:]HOSTPORT:CONTAINERPORT[/tcp|udp]`: parsing, and the check that the
host port is free, made by binding it (bind(2) fails with EADDRINUSE while another socket
holds it) before anything is created.

Only IPv4 (corral's nftables table is ``table ip``). Without IP a port is published on every
address of the host, the loopback included; with IP only on that address. The check does
not hold the port afterwards: DNAT rules catch the packets before any local socket sees
them, so a program binding the port later is silently shadowed (docker holds it with
docker-proxy; corral does not run a proxy).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

PUBLISH_FORM = "[IP:]HOSTPORT:CONTAINERPORT[/tcp|udp] with ports 1-65535 and an IPv4 address"
PROTOCOLS = ("tcp", "udp")

Protocol = Literal["tcp", "udp"]


class PublishError(ValueError):
    """A -p/--publish value that cannot be used; nothing was created."""

    def __init__(self, text: str, why: str, allowed: str = PUBLISH_FORM) -> None:
        tail = f"; allowed: {allowed}" if allowed else ""
        super().__init__(f"-p/--publish {text!r}: {why}{tail}")
        self.text = text


@dataclass(frozen=True)
class PortSpec:
    """One published port: ``host_ip`` "" means every address of the host."""

    host_port: int
    container_port: int
    protocol: Protocol = "tcp"
    host_ip: str = ""

    def __str__(self) -> str:
        ip = f"{self.host_ip}:" if self.host_ip else ""
        return f"{ip}{self.host_port}:{self.container_port}/{self.protocol}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "host_ip": self.host_ip,
            "host_port": self.host_port,
            "container_port": self.container_port,
            "protocol": self.protocol,
        }

    @classmethod
    def from_dict(cls, d: Any) -> PortSpec:
        """The inverse of to_dict; PublishError when a field is malformed."""
        if not isinstance(d, dict):
            raise PublishError(repr(d), "not an object with host_ip, host_port, ...")
        return parse_publish(
            f"{d.get('host_ip') or ''}{':' if d.get('host_ip') else ''}"
            f"{d.get('host_port')}:{d.get('container_port')}/{d.get('protocol')}"
        )


def _port(text: str, value: str, which: str) -> int:
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= 65535:
        raise PublishError(text, f"{which} port {value!r} is not a number in 1-65535")
    return int(value)


def parse_publish(text: str) -> PortSpec:
    """ "8080:80", "127.0.0.1:8080:80/udp" -> PortSpec; PublishError naming what is wrong."""
    body, slash, protocol = text.partition("/")
    if slash and protocol not in PROTOCOLS:
        raise PublishError(text, f"unknown protocol {protocol!r}")
    parts = body.split(":")
    if len(parts) not in (2, 3):
        raise PublishError(text, "not [IP:]HOSTPORT:CONTAINERPORT")
    host_ip = ""
    if len(parts) == 3:
        try:
            host_ip = str(ipaddress.IPv4Address(parts[0]))
        except ValueError:
            raise PublishError(text, f"{parts[0]!r} is not an IPv4 address") from None
    host_port = _port(text, parts[-2], "host")
    container_port = _port(text, parts[-1], "container")
    proto: Protocol = "udp" if protocol == "udp" else "tcp"
    return PortSpec(host_port, container_port, proto, host_ip)


def parse_publish_all(texts: Iterable[str]) -> tuple[PortSpec, ...]:
    """Every -p value; a host port published twice (same protocol, overlapping address) is
    refused."""
    specs: list[PortSpec] = []
    for text in texts:
        spec = parse_publish(text)
        for other in specs:
            if clashes(spec, other):
                raise PublishError(text, f"host port {spec.host_port}/{spec.protocol} is "
                                   f"already published by {str(other)!r}", "")  # fmt: skip
        specs.append(spec)
    return tuple(specs)


def clashes(a: PortSpec, b: PortSpec) -> bool:
    """The two specs would DNAT the same packets (an empty host_ip overlaps every address)."""
    same_ip = not a.host_ip or not b.host_ip or a.host_ip == b.host_ip
    return a.host_port == b.host_port and a.protocol == b.protocol and same_ip


def check_ports_free(specs: Sequence[PortSpec]) -> None:
    """bind(2) each host port in this network namespace and let it go: PublishError when
    another socket holds it (EADDRINUSE) or when the address is not the host's
    (EADDRNOTAVAIL). SO_REUSEADDR for TCP, so that connections in TIME_WAIT do not count
    (a listening socket still does)."""
    for spec in specs:
        kind = socket.SOCK_STREAM if spec.protocol == "tcp" else socket.SOCK_DGRAM
        with socket.socket(socket.AF_INET, kind) as s:
            if spec.protocol == "tcp":
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            address = spec.host_ip or "0.0.0.0"
            try:
                s.bind((address, spec.host_port))
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    port = f"{spec.host_port}/{spec.protocol}"
                    why = f"host port {port} is already in use on {address}"
                    raise PublishError(str(spec), why, "a free host port") from None
                if e.errno == errno.EADDRNOTAVAIL:
                    raise PublishError(
                        str(spec), f"{address} is not an address of this host", ""
                    ) from None
                raise PublishError(str(spec), f"cannot bind {address}: {e.strerror}", "") from None
