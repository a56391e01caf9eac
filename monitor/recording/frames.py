"""Frame bodies: a HostSample (and its names) coded against the frame before it.

A keyframe is coded against nothing; a delta frame against the previous frame's state. The
body, before compression:

    errors      count, then (kind:str, count:sint) each
    names       a JSON blob: {"set": [[key, path, kind, name, id, labels]...], "del": [key...]}
                with what changed since the previous frame (empty: unchanged)
    shapes      count, then each new shape: its number count and its tokens (codec.py)
    cgroups     count, then per cgroup in the sample's order: ref (0: new, followed by its
                path; else 1 + zigzag of its position in the previous frame minus the one
                expected), then shape (0: same as in the previous frame; else id + 1)
    numbers     per cgroup: zigzag deltas against its previous numbers when it kept its
                shape, else the numbers themselves; written column by column across the
                cgroups of each shape (in the order shapes are first used), so that one
                figure of many cgroups sits together for zlib

A cgroup of the previous frame that is not referenced has vanished. Static figures (limits,
memory.stat keys that do not move, idle counters) cost a zero byte each before zlib, and
almost nothing after it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from monitor.recording.codec import SampleCodec, Shape
from monitor.recording.wire import Reader, WireError, Writer, zigzag
from monitor.sample import CgroupSample
from monitor.snapshot import CgroupName


@dataclass
class _State:
    """What the previous frame left: enough to code (or decode) the next one."""

    paths: list[str] = field(default_factory=list)
    position: dict[str, int] = field(default_factory=dict)
    shape_of: list[int] = field(default_factory=list)  # shape id per position
    nums_of: list[list[int]] = field(default_factory=list)
    samples: list[CgroupSample] = field(default_factory=list)
    shapes: list[tuple[Shape, int]] = field(default_factory=list)  # (tokens, count) by id
    shape_ids: dict[Shape, int] = field(default_factory=dict)
    names: dict[str, CgroupName] = field(default_factory=dict)

    def push(self, path: str, sid: int, values: list[int], sample: CgroupSample) -> None:
        self.position[path] = len(self.paths)
        self.paths.append(path)
        self.shape_of.append(sid)
        self.nums_of.append(values)
        self.samples.append(sample)


@dataclass(frozen=True, slots=True)
class Decoded:
    cgroups: dict[str, CgroupSample]
    errors: dict[str, int]
    names: dict[str, CgroupName]


def names_diff(old: Mapping[str, CgroupName], new: Mapping[str, CgroupName]) -> bytes:
    if new is old or new == old:
        return b""
    changed = [
        [key, n.path, n.kind, n.name, n.id, dict(n.labels)]
        for key, n in new.items()
        if old.get(key) != n
    ]
    gone = [key for key in old if key not in new]
    return json.dumps({"set": changed, "del": gone}, separators=(",", ":")).encode()


def apply_names(names: dict[str, CgroupName], blob: bytes) -> dict[str, CgroupName]:
    if not blob:
        return names
    diff: dict[str, Any] = json.loads(blob)
    gone = set(diff["del"])
    out = {k: v for k, v in names.items() if k not in gone}
    for key, path, kind, name, ident, labels in diff["set"]:
        out[key] = CgroupName(path, kind, name, ident, labels)
    return out


class FrameEncoder:
    def __init__(self, codec: SampleCodec) -> None:
        self.codec = codec
        self.state = _State()

    def encode(
        self,
        cgroups: Mapping[str, CgroupSample],
        errors: Mapping[str, int],
        names: Mapping[str, CgroupName],
        *,
        keyframe: bool,
    ) -> bytes:
        prev = _State() if keyframe else self.state
        head, shapes, refs, nums = Writer(), Writer(), Writer(), Writer()
        head.uint(len(errors))
        for kind, count in errors.items():
            head.str(kind)
            head.sint(count)
        head.blob(names_diff(prev.names, names))
        cur = _State(shapes=prev.shapes.copy(), shape_ids=prev.shape_ids.copy())
        cur.names = dict(names)
        known_shapes = len(cur.shapes)
        refs.uint(len(cgroups))
        rows: dict[int, list[list[int]]] = {}  # shape id -> the number rows to write
        expect = 0
        for path, sample in cgroups.items():
            pos = prev.position.get(path)
            if pos is not None and prev.samples[pos] is sample:
                # The collector hands back the very object of an unchanged cgroup.
                sid, values = prev.shape_of[pos], prev.nums_of[pos]
            else:
                sid, values = self._flatten(path, sample, cur)
            if pos is None:
                refs.uint(0)
                refs.str(path)
            else:
                refs.uint(zigzag(pos - expect) + 1)
                expect = pos + 1
            rows.setdefault(sid, []).append(_code_numbers(refs, sid, values, prev, pos))
            cur.push(path, sid, values, sample)
        _write_shapes(shapes, cur.shapes[known_shapes:])
        for group in rows.values():
            for column in zip(*group, strict=True):
                nums.sints(column)
        self.state = cur
        return bytes(head.buf + shapes.buf + refs.buf + nums.buf)

    def _flatten(self, path: str, sample: CgroupSample, cur: _State) -> tuple[int, list[int]]:
        """(shape id, numbers) of ``sample``, interning a shape not seen before."""
        if sample.path != path:
            raise ValueError(f"HostSample.cgroups[{path!r}] holds the sample of {sample.path!r}")
        shape, values = self.codec.flatten(sample)
        sid = cur.shape_ids.get(shape)
        if sid is None:
            sid = cur.shape_ids[shape] = len(cur.shapes)
            cur.shapes.append((shape, len(values)))
        return sid, values


def _code_numbers(
    refs: Writer, sid: int, values: list[int], prev: _State, pos: int | None
) -> list[int]:
    """Writes the shape reference; returns the deltas when the cgroup kept its shape,
    else the numbers themselves."""
    if pos is not None and prev.shape_of[pos] == sid:
        refs.uint(0)
        return [a - b for a, b in zip(values, prev.nums_of[pos], strict=True)]
    refs.uint(sid + 1)
    return values


def _write_shapes(out: Writer, new: list[tuple[Shape, int]]) -> None:
    out.uint(len(new))
    for shape, count in new:
        out.uint(count)
        out.uint(len(shape))
        for token in shape:
            out.str(token)


def _read_rows(r: Reader, sids: list[int], shapes: list[tuple[Shape, int]]) -> list[list[int]]:
    """Each cgroup's numbers: per shape (in order of first use), column after column."""
    groups: dict[int, list[int]] = {}
    for i, sid in enumerate(sids):
        groups.setdefault(sid, []).append(i)
    rows: list[list[int]] = [[] for _ in sids]
    for sid, members in groups.items():
        flat = r.sints(shapes[sid][1] * len(members))
        for j, i in enumerate(members):
            rows[i] = flat[j :: len(members)]
    return rows


class FrameDecoder:
    def __init__(self, codec: SampleCodec) -> None:
        self.codec = codec
        self.state = _State()

    def decode(self, body: bytes, *, keyframe: bool) -> Decoded:
        """The frame's cgroups, errors and names; WireError or CodecError when the body
        does not parse (then the state is unchanged)."""
        prev = _State() if keyframe else self.state
        r = Reader(body)
        errors = {r.str(): r.sint() for _ in range(r.uint())}
        cur = _State(shapes=prev.shapes.copy(), shape_ids={})
        cur.names = apply_names(prev.names, r.blob())
        for _ in range(r.uint()):
            count = r.uint()
            cur.shapes.append((tuple(r.str() for _ in range(r.uint())), count))
        refs = self._refs(r, prev, cur)
        rows = _read_rows(r, [sid for _, _, sid in refs], cur.shapes)
        cgroups: dict[str, CgroupSample] = {}
        for (path, pos, sid), values in zip(refs, rows, strict=True):
            shape = cur.shapes[sid][0]
            if pos is not None and prev.shape_of[pos] == sid:
                if not any(values):  # unchanged: share the previous (immutable) sample
                    values, sample = prev.nums_of[pos], prev.samples[pos]
                else:
                    values = [a + b for a, b in zip(values, prev.nums_of[pos], strict=True)]
                    sample = self.codec.unflatten(path, shape, values)
            else:
                sample = self.codec.unflatten(path, shape, values)
            cgroups[path] = sample
            cur.push(path, sid, values, sample)
        r.done()
        self.state = cur
        return Decoded(cgroups, errors, cur.names)

    @staticmethod
    def _refs(r: Reader, prev: _State, cur: _State) -> list[tuple[str, int | None, int]]:
        """(path, position in the previous frame or None, shape id) per cgroup."""
        out: list[tuple[str, int | None, int]] = []
        expect = 0
        for _ in range(r.uint()):
            ref = r.uint()
            pos: int | None = None
            if ref == 0:
                path = r.str()
            else:
                z = ref - 1
                pos = expect + (-((z + 1) >> 1) if z & 1 else z >> 1)
                if not 0 <= pos < len(prev.paths):
                    raise WireError(f"cgroup reference {pos} outside the previous frame")
                path, expect = prev.paths[pos], pos + 1
            sid = r.uint()
            sid = prev.shape_of[pos] if sid == 0 and pos is not None else sid - 1
            if not 0 <= sid < len(cur.shapes):
                raise WireError(f"shape {sid} is not defined")
            out.append((path, pos, sid))
        return out
