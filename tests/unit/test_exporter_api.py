"""The dashboard's JSON API: the exact round trip of a snapshot through JSON (the captured
kernel tree, every frame of a recording, edge values), and /api/v1/* on a real MetricsServer
on loopback (gzip, the history's bounds and cache, the audit feed, basic auth, bad queries)."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from test_exporter_support import NAMES, fixture_fs, get, serving, snapshot_of

from monitor.exporter import Exporter
from monitor.exporter.api import (
    HISTORY_LIMIT,
    Api,
    ApiError,
    ApiProvider,
    decode_snapshot,
    encode_snapshot,
)
from monitor.exporter.webconfig import WebConfig
from monitor.history import History
from monitor.recording import Recording
from monitor.sample import CgroupSample, HostSample, Limits
from monitor.snapshot import CgroupName, Snapshot, build_snapshot
from runtime.cgroupfs.core import CgroupEvents
from runtime.cgroupfs.cpu import CpuMax, CpuStat
from runtime.cgroupfs.formats import MAX
from runtime.cgroupfs.io import RATE_MAX, Device, IoMax, IoStat
from runtime.cgroupfs.pressure import Pressure, PressureLine

RECORDING = Path(__file__).resolve().parent.parent / "fixtures" / "recordings" / "demo.corral"


def through_json(snapshot: Snapshot, prev: HostSample | None = None) -> Snapshot:
    return decode_snapshot(json.loads(json.dumps(encode_snapshot(snapshot))), prev)


def assert_same(a: Snapshot, b: Snapshot) -> None:
    assert (a.seq, a.collect_seconds, a.names) == (b.seq, b.collect_seconds, b.names)
    assert a.sample == b.sample
    assert dict(a.models) == dict(b.models)


def test_captured_tree_round_trips_with_max_as_the_string_max(tmp_path: Path) -> None:
    snap = snapshot_of(fixture_fs(tmp_path), seq=7, names=NAMES)
    encoded = json.loads(json.dumps(encode_snapshot(snap)))
    assert_same(through_json(snap), snap)
    web = encoded["cgroups"]["capture/web"]
    assert web["limits"]["memory_max"] == "max"
    assert web["limits"]["cpu_max"] == {"quota": 20000}  # the period is the default
    assert encoded["names"]["capture/web"] == {
        "kind": "container",
        "name": "web",
        "id": "3f2a9c1e0b7d",
    }
    assert "path" not in web  # the key says it


def test_every_recorded_frame_round_trips_and_rebuilds_the_agents_models() -> None:
    with Recording(RECORDING) as rec:
        snapshots = list(rec.snapshots())
    prev: HostSample | None = None
    for snap in snapshots:
        assert_same(through_json(snap, prev), snap)
        prev = snap.sample
    assert any(s.models["demo.slice/web.service"].throttled_ratio for s in snapshots[1:])


def edge_sample() -> HostSample:
    line = PressureLine(avg10=0.1 + 0.2, avg60=12.34, avg300=0.0, total_usec=2**63 - 1)
    odd = "weird \udcff name (a+b)"  # a directory name that is not UTF-8, as os.scandir gives it
    cgroup = CgroupSample(
        odd,
        cpu=CpuStat(usage_usec=2**64 - 1, user_usec=0, system_usec=1),
        memory_stat={"anon": 0, "file": 5},
        io={Device(254, 0): IoStat(rbytes=1, dios=2**64 - 1)},
        pressure={"memory": Pressure(line, None), "cpu": Pressure(line, line)},
        events=CgroupEvents(populated=True, frozen=False),
        nr_procs=0,
        limits=Limits(
            cpu_max=CpuMax(MAX, 250_000),
            cpu_weight=100,
            memory_high=0,
            memory_max=MAX,
            io_max={Device(8, 0): IoMax(rbps=RATE_MAX, wiops=MAX)},
            pids_max=MAX,
        ),
    )
    return HostSample(1795894318.123456, 1e-9, {odd: cgroup, "": CgroupSample("")}, {"gone": 3})


def test_edge_values_round_trip_exactly() -> None:
    names = {"x": CgroupName("x", "container", "web", "abc", {"team": "a=b", "é": ""})}
    snap = build_snapshot(None, edge_sample(), seq=2**40, names=names, collect_seconds=0.0)
    back = through_json(snap)
    assert_same(back, snap)
    cg = back.sample.cgroups["weird \udcff name (a+b)"]
    assert cg.limits.cpu_max == CpuMax(MAX, 250_000) and cg.limits.memory_high == 0
    assert cg.events is not None and cg.events.frozen is False  # a False is no default here


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda o: o["cgroups"][""]["limits"].update(memory_max="unlimited"), "'unlimited'"),
        (lambda o: o["cgroups"][""].update(nr_procs=True), "CgroupSample.nr_procs: True"),
        (lambda o: o["cgroups"][""]["io"].update({"8-0": {}}), "device key '8-0'"),
        (lambda o: o.update(seq="1"), "seq '1'"),
        (lambda o: o.pop("wall_time"), "not an encoded snapshot"),
        (lambda o: o["cgroups"].update(x=[1]), "CgroupSample: [1] is not an object"),
    ],
)
def test_bad_json_is_refused_naming_the_field(change: Any, words: str) -> None:
    obj = json.loads(
        json.dumps(
            encode_snapshot(
                build_snapshot(None, edge_sample(), seq=1, names={}, collect_seconds=0.0)
            )
        )
    )
    obj["cgroups"][""] = {"limits": {}, "io": {}}
    change(obj)
    with pytest.raises(ApiError, match=words.replace("(", r"\(").replace("[", r"\[")):
        decode_snapshot(obj)


def test_fields_a_newer_agent_adds_are_ignored() -> None:
    obj = encode_snapshot(build_snapshot(None, edge_sample(), seq=1, names={}, collect_seconds=0.5))
    obj["cgroups"][""]["memory_tier"] = {"fast": 1}
    assert decode_snapshot(obj).sample == edge_sample()


# -- the routes on a real server ------------------------------------------------------------


def recorded(count: int) -> list[Snapshot]:
    with Recording(RECORDING) as rec:
        return [s for s, _ in zip(rec.snapshots(), range(count), strict=False)]


AUDIT: list[dict[str, Any]] = [
    {"time": 100.0 + i, "rule": "squeeze", "outcome": "applied"} for i in range(5)
]


def provider_of(snapshots: list[Snapshot], exporter: Exporter) -> ApiProvider:
    history = History()
    for snap in snapshots:
        history.append(snap)
        exporter.publish(snap)
    return ApiProvider(history, lambda after: [e for e in AUDIT if e["time"] > after])


def body_json(reply: Any) -> Any:
    assert reply.headers["content-type"] == "application/json", reply.body
    data = reply.body
    if reply.headers.get("content-encoding") == "gzip":
        data = gzip.decompress(data)
    return json.loads(data)


def test_routes_serve_snapshot_history_and_audit() -> None:
    snaps = recorded(20)
    exporter = Exporter(0.5)
    provider = provider_of(snaps, exporter)
    from monitor.exporter.server import MetricsServer

    server = MetricsServer(exporter, "127.0.0.1", 0, provider=provider)
    server.start()
    try:
        url = server.url
        newest = body_json(get(url, "/api/v1/snapshot"))
        assert_same(decode_snapshot(newest, snaps[-2].sample), snaps[-1])
        zipped = get(url, "/api/v1/snapshot", {"Accept-Encoding": "gzip"})
        assert zipped.headers["content-encoding"] == "gzip" and body_json(zipped) == newest

        hist = body_json(get(url, "/api/v1/history?after=15", {"Accept-Encoding": "gzip"}))
        assert (hist["latest_seq"], hist["truncated"]) == (20, False)
        assert [s["seq"] for s in hist["snapshots"]] == [16, 17, 18, 19, 20]
        prev = snaps[14].sample
        for obj, want in zip(hist["snapshots"], snaps[15:], strict=True):
            assert_same(decode_snapshot(obj, prev), want)
            prev = want.sample
        cut = body_json(get(url, "/api/v1/history?after=0&limit=3"))
        assert [s["seq"] for s in cut["snapshots"]] == [18, 19, 20] and cut["truncated"]
        assert body_json(get(url, "/api/v1/history?after=20"))["snapshots"] == []

        audit = body_json(get(url, "/api/v1/audit?after=102.5"))
        assert audit == {"enforcer": True, "truncated": False, "entries": AUDIT[3:]}
        assert get(url, "/metrics").status == 200  # the exporter's routes are as they were
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("path", "code", "words"),
    [
        ("/api/v1/history?after=-1", 400, "after='-1': expected a whole number >= 0"),
        ("/api/v1/history?limit=0", 400, f"limit=0: expected 1..{HISTORY_LIMIT}"),
        ("/api/v1/audit?after=nan", 400, "after='nan': expected Unix seconds"),
        ("/api/v1/models", 404, "no route /api/v1/models"),
    ],
)
def test_bad_queries_say_what_is_allowed(path: str, code: int, words: str) -> None:
    exporter = Exporter(1.0)
    with serving(exporter) as server:
        reply = get(server.url, path)
    assert reply.status == code and words in body_json(reply)["error"]


def test_without_a_provider_snapshot_serves_and_history_says_why_not(tmp_path: Path) -> None:
    exporter = Exporter(1.0)
    with serving(exporter) as server:
        assert get(server.url, "/api/v1/snapshot").status == 503  # no poll yet
        exporter.publish(snapshot_of(fixture_fs(tmp_path)))
        assert body_json(get(server.url, "/api/v1/snapshot"))["seq"] == 1
        missing = get(server.url, "/api/v1/history")
        assert missing.status == 404 and "keeps no history" in body_json(missing)["error"]
        audit = body_json(get(server.url, "/api/v1/audit"))
        assert audit == {"enforcer": False, "truncated": False, "entries": []}


def test_a_failing_audit_feed_is_a_503_naming_the_error() -> None:
    def feed(after: float) -> list[dict[str, Any]]:
        raise PermissionError(13, "Permission denied", "/var/log/corral/audit.jsonl")

    api = Api(lambda: None, ApiProvider(History(), feed))
    reply = api.get("audit", {}, gzip_ok=False)
    assert reply.code == 503
    assert (
        "PermissionError: [Errno 13] Permission denied: '/var/log/corral/audit.jsonl'"
        in (json.loads(reply.body)["error"])
    )


def test_basic_auth_guards_the_api_as_it_guards_metrics() -> None:
    users = {"dash": bcrypt.hashpw(b"pw", bcrypt.gensalt(4))}
    exporter = Exporter(1.0)
    exporter.publish(recorded(1)[0])
    with serving(exporter, WebConfig(Path("web.yml"), users=users)) as server:
        assert get(server.url, "/api/v1/snapshot").status == 401
        token = base64.b64encode(b"dash:pw").decode()
        ok = get(server.url, "/api/v1/snapshot", {"Authorization": f"Basic {token}"})
        assert ok.status == 200 and body_json(ok)["seq"] == 1


def test_each_snapshot_is_encoded_once() -> None:
    snaps = recorded(3)
    api = Api(lambda: snaps[-1])
    first = [api.encoded(s) for s in snaps]
    assert all(api.encoded(s) is body for s, body in zip(snaps, first, strict=True))
    # An agent that restarted counts from seq 1 again: the same seq, another snapshot.
    again = build_snapshot(None, snaps[1].sample, seq=1, names={}, collect_seconds=9.0)
    assert json.loads(api.encoded(again))["collect_seconds"] == 9.0


def test_a_feed_answering_none_means_no_enforcer_runs_yet() -> None:
    # The agent gives its feed even without a policy (a reload can start the enforcer).
    running: list[bool] = [False]

    def feed(after: float) -> list[dict[str, Any]] | None:
        return list(AUDIT) if running[0] else None

    api = Api(lambda: None, ApiProvider(History(), feed))
    off = json.loads(api.get("audit", {}, gzip_ok=False).body)
    assert off == {"enforcer": False, "truncated": False, "entries": []}
    running[0] = True
    on = json.loads(api.get("audit", {}, gzip_ok=False).body)
    assert on["enforcer"] is True and on["entries"] == AUDIT
