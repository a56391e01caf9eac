"""config.json: a ContainerSpec as the state directory stores it (runtime.container.state),
and back. ``spec_from_dict(spec_to_dict(spec)) == spec``; a malformed file gives a SpecError
naming the field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from runtime.container.limits import limits_from_dict, limits_to_dict
from runtime.container.spec import (
    NETWORK_MODES,
    SPEC_VERSION,
    USERNS_MODES,
    ContainerSpec,
    NetworkMode,
    SpecError,
    TimeOffsets,
    UsernsMode,
    check_choice,
)
from runtime.container.volumes import Volume
from runtime.security.capabilities import User

if TYPE_CHECKING:
    from runtime.network.ports import PortSpec


def spec_to_dict(spec: ContainerSpec) -> dict[str, Any]:
    """The JSON object config.json holds (``spec_from_dict`` gives the same spec back)."""
    return {
        "version": SPEC_VERSION,
        "name": spec.name,
        "rootfs": spec.rootfs,
        "command": list(spec.command),
        "env": list(spec.env),
        "workdir": spec.workdir,
        "user": {"uid": spec.user.uid, "gid": spec.user.gid, "groups": list(spec.user.groups)},
        "hostname": spec.hostname,
        "volumes": [
            {"source": v.source, "destination": v.destination, "read_only": v.read_only}
            for v in spec.volumes
        ],
        "read_only": spec.read_only,
        "labels": dict(spec.labels),
        "init": spec.init,
        "limits": limits_to_dict(spec.limits),
        "userns": spec.userns,
        "time_offsets": {
            "monotonic_ns": spec.time_offsets.monotonic_ns,
            "boottime_ns": spec.time_offsets.boottime_ns,
        },
        "network": spec.network,
        "cap_add": list(spec.cap_add),
        "cap_drop": list(spec.cap_drop),
        "detach": spec.detach,
        "rm": spec.rm,
        "generated_name": spec.generated_name,
        "publish": [p.to_dict() for p in spec.publish],
    }


def _field(d: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = d.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise SpecError("config.json", key, f"missing or not {kind}: {value!r}")
    return value


def _strings(d: Mapping[str, Any], key: str) -> tuple[str, ...]:
    items = _field(d, key, list)
    if not all(isinstance(i, str) for i in items):
        raise SpecError("config.json", key, f"not a list of strings: {items!r}")
    return tuple(items)


def _publish(items: list[Any]) -> tuple[PortSpec, ...]:
    """-p/--publish from config.json; runtime.network (a package whose import costs a
    start ~5 ms) only when there is one."""
    if not items:
        return ()
    from runtime.network.ports import PortSpec

    return tuple(PortSpec.from_dict(p) for p in items)


def spec_from_dict(d: Mapping[str, Any]) -> ContainerSpec:
    """The spec config.json describes; SpecError naming the field when it is malformed."""
    if d.get("version") != SPEC_VERSION:
        raise SpecError("config.json", "version", f"{d.get('version')!r}", str(SPEC_VERSION))
    user, offsets = _field(d, "user", dict), _field(d, "time_offsets", dict)
    labels = _field(d, "labels", dict)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise SpecError("config.json", "labels", f"not strings to strings: {labels!r}")
    try:
        volumes = tuple(
            Volume(str(v["source"]), str(v["destination"]), bool(v["read_only"]))
            for v in _field(d, "volumes", list)
        )
        process_user = User(
            _field(user, "uid", int), _field(user, "gid", int), tuple(_field(user, "groups", list))
        )
        limits = limits_from_dict(_field(d, "limits", dict))
    except (KeyError, TypeError, ValueError) as e:
        raise SpecError.wrap("config.json", d, e) from e
    try:  # absent in configs written before -p/--publish existed
        publish = _publish(d.get("publish", []))
    except (TypeError, ValueError) as e:
        raise SpecError.wrap("config.json", "publish", e) from e
    return ContainerSpec(
        name=_field(d, "name", str),
        rootfs=_field(d, "rootfs", str),
        command=_strings(d, "command"),
        env=_strings(d, "env"),
        workdir=_field(d, "workdir", str),
        user=process_user,
        hostname=_field(d, "hostname", str),
        volumes=volumes,
        read_only=_field(d, "read_only", bool),
        labels=tuple(labels.items()),
        init=_field(d, "init", bool),
        limits=limits,
        userns=cast(UsernsMode, check_choice("userns", _field(d, "userns", str), USERNS_MODES)),
        time_offsets=TimeOffsets(
            _field(offsets, "monotonic_ns", int), _field(offsets, "boottime_ns", int)
        ),
        network=cast(
            NetworkMode, check_choice("network", _field(d, "network", str), NETWORK_MODES)
        ),
        cap_add=_strings(d, "cap_add"),
        cap_drop=_strings(d, "cap_drop"),
        detach=_field(d, "detach", bool),
        rm=_field(d, "rm", bool),
        generated_name=_field(d, "generated_name", bool),
        publish=publish,
    )
