"""The dashboard's JSON API beside /metrics: a snapshot, the history after a seq, the audit.

    GET /api/v1/snapshot             the newest snapshot
    GET /api/v1/history?after=SEQ    the History's snapshots with seq > SEQ, oldest first, at
                                     most HISTORY_LIMIT (the newest ones; "truncated" says so)
    GET /api/v1/audit?after=TIME     the enforcer's audit entries with time > TIME (Unix s),
                                     at most AUDIT_LIMIT (the newest)

A snapshot travels as its raw HostSample (every figure as the kernel file gave it, a ``max``
limit as the string "max", a device as "MAJ:MIN"), its names, seq and collect_seconds.
Models are not sent: the client rebuilds them with monitor.snapshot.build_snapshot from
consecutive samples, as a recording's replay does, so they are the agent's own figures.
A record's fields equal to their defaults are left out; ``decode_snapshot`` restores them,
and gives back values equal (==) to the encoded ones. Fields a newer agent adds are ignored.

monitor does not import enforce: the audit comes from a callable the agent is given, which
returns JSON-able dicts (enforce.audit's form of an AuditEntry).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import threading
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from monitor.history import History
from monitor.sample import CgroupSample, HostSample
from monitor.snapshot import CgroupName, Snapshot, build_snapshot
from runtime.cgroupfs.formats import MAX
from runtime.cgroupfs.io import Device

PREFIX = "/api/v1/"
JSON_TYPE = "application/json"
HISTORY_LIMIT = 300  # snapshots per /history answer: 5 minutes at one poll a second
AUDIT_LIMIT = 1000  # entries per /audit answer

# audit(after): the entries with time > after, or None while no enforcer runs (the agent can
# start one on a reload, so the feed is given even when there is none yet).
AuditFeed = Callable[[float], Sequence[Mapping[str, Any]] | None]


class ApiError(ValueError):
    """JSON that is not a snapshot this code can read, or a value it cannot encode."""


@dataclass(frozen=True, slots=True)
class ApiProvider:
    """What the agent gives the server for /api/v1: its History (the poller appends each
    snapshot) and ``audit(after)``, the audit entries with time > ``after`` as JSON dicts
    (no feed, or a feed answering None: no enforcer runs, the audit is empty)."""

    history: History
    audit: AuditFeed | None = None


# -- encoding --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    default: Any
    has_default: bool


_FIELDS: dict[type, tuple[_Field, ...]] = {}
_KEYS = {CgroupSample: "path", CgroupName: "path"}  # held as the mapping's key instead


def _fields(cls: type) -> tuple[_Field, ...]:
    found = _FIELDS.get(cls)
    if found is None:
        found = tuple(
            _Field(
                f.name,
                f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default,
                f.default is not dataclasses.MISSING
                or f.default_factory is not dataclasses.MISSING,
            )
            for f in dataclasses.fields(cls)
            if f.name != _KEYS.get(cls)
        )
        _FIELDS[cls] = found
    return found


def _is_default(value: Any, f: _Field) -> bool:
    if not f.has_default:
        return False
    if f.default is None:
        return value is None
    return type(value) is type(f.default) and bool(value == f.default)


def encode_value(value: Any) -> Any:
    """A sample's value as JSON: records as objects (default fields left out), mappings
    keyed by str (a Device as "MAJ:MIN"), MAX as "max"."""
    kind = type(value)
    if value is None or kind is int or kind is str or kind is bool:
        return value
    if kind is float:
        if not math.isfinite(value):
            raise ApiError(f"cannot encode the float {value!r}: expected a finite number")
        return value
    if value is MAX:
        return "max"
    if dataclasses.is_dataclass(value):
        out = {}
        for f in _fields(kind):
            item = getattr(value, f.name)
            if not _is_default(item, f):
                out[f.name] = encode_value(item)
        return out
    if isinstance(value, Mapping):
        return {_encode_key(k): encode_value(v) for k, v in value.items()}
    raise ApiError(f"cannot encode {value!r} ({kind.__name__})")


def _encode_key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, Device):
        return str(key)
    raise ApiError(f"cannot encode the mapping key {key!r}: expected a str or a Device")


def encode_snapshot(snapshot: Snapshot) -> dict[str, Any]:
    """The snapshot's raw sample, names, seq and collect_seconds as a JSON object."""
    sample = snapshot.sample
    return {
        "seq": snapshot.seq,
        "collect_seconds": snapshot.collect_seconds,
        "wall_time": sample.wall_time,
        "monotonic": sample.monotonic,
        "errors": dict(sample.errors),
        "cgroups": {path: encode_value(cg) for path, cg in sample.cgroups.items()},
        "names": {path: encode_value(name) for path, name in snapshot.names.items()},
    }


# -- decoding --------------------------------------------------------------------------------

Decoder = Callable[[Any], Any]
_DECODERS: dict[tuple[Any, str], Decoder] = {}


def _decoder(tp: Any, where: str) -> Decoder:
    """A function turning the JSON form of a value of type ``tp`` back into the value;
    built once per type from the dataclasses' annotations."""
    found = _DECODERS.get((tp, where))
    if found is None:
        found = _DECODERS[(tp, where)] = _build_decoder(tp, where)
    return found


def _build_decoder(tp: Any, where: str) -> Decoder:
    origin = get_origin(tp)
    if origin is Union or origin is types.UnionType:
        return _union(get_args(tp), where)
    if origin is Literal and get_args(tp) == (MAX,):
        return lambda v: MAX if v == "max" else _fail(where, v, '"max"')
    if origin in (Mapping, dict, typing.Mapping):
        key_type, value_type = get_args(tp)
        key = _device_key if key_type is Device else str
        value = _decoder(value_type, f"{where}[]")
        return lambda v: {key(k): value(x) for k, x in _object(v, where).items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _record(tp)
    if tp is float:
        return lambda v: float(v) if type(v) in (int, float) else _fail(where, v, "a number")
    if tp in (int, str, bool):
        return _exactly(tp, where)
    raise ApiError(f"{where}: the type {tp!r} has no JSON decoder")


def _exactly(tp: type, where: str) -> Decoder:
    def decode(v: Any) -> Any:
        return v if type(v) is tp else _fail(where, v, tp.__name__)  # True is no int here

    return decode


def _union(args: tuple[Any, ...], where: str) -> Decoder:
    nullable = type(None) in args
    has_max = any(get_origin(a) is Literal and get_args(a) == (MAX,) for a in args)
    rest = [a for a in args if a is not type(None) and get_origin(a) is not Literal]
    if len(rest) != 1:
        raise ApiError(f"{where}: the union {args!r} has no JSON decoder")
    inner = _decoder(rest[0], where)

    def decode(v: Any) -> Any:
        if v is None and nullable:
            return None
        if has_max and v == "max":
            return MAX
        return inner(v)

    return decode


def _record(cls: type) -> Decoder:
    hints = get_type_hints(cls)
    decoders = {f.name: _decoder(hints[f.name], f"{cls.__name__}.{f.name}") for f in _fields(cls)}
    key = _KEYS.get(cls)

    def decode(v: Any) -> Any:
        obj = _object(v, cls.__name__)
        values = {k: decoders[k](x) for k, x in obj.items() if k in decoders}
        if key is not None:
            values[key] = obj.get(key, "")
        try:
            return cls(**values)
        except TypeError as e:
            raise ApiError(f"{cls.__name__}: {e}") from None

    return decode


def _object(v: Any, where: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ApiError(f"{where}: {v!r} is not an object")
    return v


def _fail(where: str, value: Any, expected: str) -> Any:
    raise ApiError(f"{where}: {value!r} is not {expected}")


def _device_key(text: str) -> Device:
    try:
        return Device.parse(text)
    except ValueError:
        raise ApiError(f"device key {text!r}: expected MAJ:MIN like 8:0") from None


def decode_sample(obj: Mapping[str, Any]) -> HostSample:
    """The HostSample of an encoded snapshot."""
    cgroup = _decoder(CgroupSample, "CgroupSample")
    try:
        cgroups = {}
        for path, cg in _object(obj["cgroups"], "cgroups").items():
            try:
                cgroups[path] = cgroup({**_object(cg, "CgroupSample"), "path": path})
            except ApiError as e:
                raise ApiError(f"cgroup {path!r}: {e}") from None
        errors = _decoder(Mapping[str, int], "errors")(obj.get("errors", {}))
        return HostSample(float(obj["wall_time"]), float(obj["monotonic"]), cgroups, errors)
    except (KeyError, TypeError, AttributeError) as e:
        raise ApiError(f"not an encoded snapshot: {type(e).__name__} {e}") from None


def decode_snapshot(obj: Mapping[str, Any], prev: HostSample | None = None) -> Snapshot:
    """The Snapshot of an encoded one, its models rebuilt against ``prev`` (the sample
    before it; None: no rates, as for an agent's first poll)."""
    name = _decoder(CgroupName, "CgroupName")
    try:
        names = {path: name({**n, "path": path}) for path, n in obj.get("names", {}).items()}
        seq, collect = obj["seq"], obj["collect_seconds"]
    except (KeyError, TypeError, AttributeError) as e:
        raise ApiError(f"not an encoded snapshot: {type(e).__name__} {e}") from None
    if type(seq) is not int or type(collect) not in (int, float):
        raise ApiError(f"seq {seq!r} / collect_seconds {collect!r}: expected int / number")
    return build_snapshot(
        prev, decode_sample(obj), seq=seq, names=names, collect_seconds=float(collect)
    )


# -- the routes ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer for the server to send: JSON, gzip-compressed when ``gzipped``."""

    code: int
    body: bytes
    gzipped: bool = False


class Api:
    """Answers /api/v1/* from ``current`` (the exporter's newest snapshot) and ``provider``.
    Each snapshot is encoded once, when first asked for (cached by seq while the History
    holds it), so a dashboard polling /history costs a join of ready bytes. Thread-safe."""

    def __init__(
        self, current: Callable[[], Snapshot | None], provider: ApiProvider | None = None
    ) -> None:
        self.current = current
        self.provider = provider
        self._lock = threading.Lock()
        self._encoded: dict[int, tuple[Snapshot, bytes]] = {}
        self._latest_gz: tuple[Snapshot, bytes] | None = None

    def get(self, route: str, query: Mapping[str, str], gzip_ok: bool) -> Reply:
        """The answer to GET PREFIX+``route`` with ``query`` (first value of each name)."""
        try:
            if route == "snapshot":
                return self._snapshot(gzip_ok)
            if route == "history":
                return self._history(query, gzip_ok)
            if route == "audit":
                return self._audit(query, gzip_ok)
        except _BadQuery as e:
            return _error(400, str(e))
        return _error(
            404, f"no route {PREFIX}{route}: try snapshot, history?after=SEQ, audit?after=UNIX_TIME"
        )

    def encoded(self, snapshot: Snapshot) -> bytes:
        """The snapshot's JSON, from the cache when this very snapshot was encoded."""
        hit = self._encoded.get(snapshot.seq)
        if hit is not None and hit[0] is snapshot:
            return hit[1]
        body = json.dumps(encode_snapshot(snapshot), separators=(",", ":")).encode()
        with self._lock:
            self._encoded[snapshot.seq] = (snapshot, body)
            if len(self._encoded) > 2 * HISTORY_LIMIT:  # drop the oldest half
                for seq in sorted(self._encoded)[:HISTORY_LIMIT]:
                    del self._encoded[seq]
        return body

    def _snapshot(self, gzip_ok: bool) -> Reply:
        snapshot = self.current()
        if snapshot is None:
            return _error(503, "no snapshot yet: the first poll has not finished")
        if not gzip_ok:
            return Reply(200, self.encoded(snapshot))
        latest = self._latest_gz
        if latest is None or latest[0] is not snapshot:
            latest = self._latest_gz = (snapshot, _gzip(self.encoded(snapshot)))
        return Reply(200, latest[1], True)

    def _history(self, query: Mapping[str, str], gzip_ok: bool) -> Reply:
        after = _int_param(query, "after", 0)
        limit = _int_param(query, "limit", HISTORY_LIMIT)
        if not 1 <= limit <= HISTORY_LIMIT:
            raise _BadQuery(f"limit={limit}: expected 1..{HISTORY_LIMIT}")
        if self.provider is None:
            return _error(404, "this agent keeps no history (started without an API provider)")
        held = self.provider.history.snapshots()
        newer = [s for s in held if s.seq > after]
        sent = newer[-limit:]
        latest = held[-1].seq if held else None
        head = json.dumps({"latest_seq": latest, "truncated": len(sent) < len(newer)})
        body = b"".join(
            [head[:-1].encode(), b',"snapshots":[', b",".join(map(self.encoded, sent)), b"]}"]
        )
        return _reply(body, gzip_ok)

    def _audit(self, query: Mapping[str, str], gzip_ok: bool) -> Reply:
        text = query.get("after", "0")
        try:
            after = float(text)
        except ValueError:
            after = math.nan
        if not math.isfinite(after):
            raise _BadQuery(f"after={text!r}: expected Unix seconds like 1795894318.5")
        feed = self.provider.audit if self.provider is not None else None
        try:
            answer = feed(after) if feed is not None else None
            if answer is None:
                return _reply(b'{"enforcer":false,"truncated":false,"entries":[]}', gzip_ok)
            entries = list(answer)
            body = json.dumps(
                {
                    "enforcer": True,
                    "truncated": len(entries) > AUDIT_LIMIT,
                    "entries": entries[-AUDIT_LIMIT:],
                },
                separators=(",", ":"),
            )
        except Exception as e:  # an unreadable log, a bad entry: the dashboard says why
            return _error(503, f"the audit is unavailable: {type(e).__name__}: {e}")
        return _reply(body.encode(), gzip_ok)


class _BadQuery(ValueError):
    pass


def _int_param(query: Mapping[str, str], name: str, default: int) -> int:
    text = query.get(name)
    if text is None:
        return default
    if not text.isascii() or not text.isdigit():
        raise _BadQuery(f"{name}={text!r}: expected a whole number >= 0")
    return int(text)


def _gzip(body: bytes) -> bytes:
    return gzip.compress(body, compresslevel=1, mtime=0)


def _reply(body: bytes, gzip_ok: bool) -> Reply:
    return Reply(200, _gzip(body), True) if gzip_ok else Reply(200, body)


def _error(code: int, message: str) -> Reply:
    return Reply(code, json.dumps({"error": message}).encode())
