"""-p/--publish: parsing (exact messages), the spec and config.json forms, and the check
that a host port is free (in a network namespace the test creates)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from test_network_netns import in_netns

from runtime.container.config import spec_from_dict, spec_to_dict
from runtime.container.spec import SpecError, build_spec
from runtime.network import PortSpec, PublishError, check_ports_free, parse_publish
from runtime.network.ports import parse_publish_all

FORM = "[IP:]HOSTPORT:CONTAINERPORT[/tcp|udp] with ports 1-65535 and an IPv4 address"


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("8080:80", PortSpec(8080, 80, "tcp", "")),
        ("18080:8080/tcp", PortSpec(18080, 8080, "tcp", "")),
        ("127.0.0.1:5353:53/udp", PortSpec(5353, 53, "udp", "127.0.0.1")),
        ("1:65535", PortSpec(1, 65535, "tcp", "")),
    ],
)
def test_valid_specs(text: str, spec: PortSpec) -> None:
    assert parse_publish(text) == spec
    assert parse_publish(str(spec)) == spec
    assert PortSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("8080", "not [IP:]HOSTPORT:CONTAINERPORT"),
        ("a:b:c:d", "not [IP:]HOSTPORT:CONTAINERPORT"),
        ("0:80", "host port '0' is not a number in 1-65535"),
        ("x:80", "host port 'x' is not a number in 1-65535"),
        ("8080:70000", "container port '70000' is not a number in 1-65535"),
        ("8080:", "container port '' is not a number in 1-65535"),
        ("8080:-1", "container port '-1' is not a number in 1-65535"),
        ("８０:80", "host port '８０' is not a number in 1-65535"),
        ("8080:80/sctp", "unknown protocol 'sctp'"),
        ("8080:80/", "unknown protocol ''"),
        ("1.2.3:8080:80", "'1.2.3' is not an IPv4 address"),
        ("::1:8080:80", "not [IP:]HOSTPORT:CONTAINERPORT"),
        ("::80", "'' is not an IPv4 address"),
    ],
)
def test_bad_specs_name_the_value_and_the_allowed_form(text: str, why: str) -> None:
    with pytest.raises(PublishError) as e:
        parse_publish(text)
    assert str(e.value) == f"-p/--publish {text!r}: {why}; allowed: {FORM}"


def test_a_host_port_published_twice_is_refused() -> None:
    with pytest.raises(PublishError) as e:
        parse_publish_all(["8080:80", "127.0.0.1:8080:81"])
    assert str(e.value) == (
        "-p/--publish '127.0.0.1:8080:81': host port 8080/tcp is already published by '8080:80/tcp'"
    )
    assert len(parse_publish_all(["8080:80", "8080:80/udp", "1.2.3.4:9090:1"])) == 3


def test_publish_needs_the_bridge_network(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    with pytest.raises(SpecError) as e:
        build_spec(rootfs=str(tmp_path), command=["true"], network="none", publish=["8080:80"])
    assert str(e.value) == (
        "-p/--publish '8080:80/tcp': needs --network bridge, not none; "
        "allowed: --network bridge -p HOSTPORT:CONTAINERPORT"
    )


def test_publish_survives_config_json(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    spec = build_spec(
        rootfs=str(tmp_path), command=["true"], network="bridge",
        publish=["8080:80", "127.0.0.1:5353:53/udp"],
    )  # fmt: skip
    assert spec.publish == (PortSpec(8080, 80), PortSpec(5353, 53, "udp", "127.0.0.1"))
    assert spec_from_dict(spec_to_dict(spec)) == spec
    old = spec_to_dict(spec)
    del old["publish"]  # written before -p existed
    assert spec_from_dict(old).publish == ()
    bad = {**spec_to_dict(spec), "publish": [{"host_port": 0}]}
    with pytest.raises(SpecError, match=r"config\.json"):
        spec_from_dict(bad)


def test_a_port_taken_on_this_host_is_refused() -> None:
    def check() -> None:
        busy = socket.socket()
        busy.bind(("127.0.0.1", 18080))
        busy.listen(1)
        with pytest.raises(PublishError) as e:
            check_ports_free([parse_publish("18080:80")])
        assert str(e.value) == (
            "-p/--publish '18080:80/tcp': host port 18080/tcp is already in use on 0.0.0.0; "
            "allowed: a free host port"
        )
        check_ports_free([parse_publish("18080:80/udp"), parse_publish("18081:80")])
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("0.0.0.0", 5353))
        with pytest.raises(PublishError, match="host port 5353/udp is already in use"):
            check_ports_free([parse_publish("127.0.0.1:5353:53/udp")])
        with pytest.raises(PublishError) as e:
            check_ports_free([parse_publish("192.0.2.77:8080:80")])
        assert str(e.value) == (
            "-p/--publish '192.0.2.77:8080:80/tcp': 192.0.2.77 is not an address of this host"
        )

    in_netns(check)
