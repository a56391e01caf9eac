"""The three measurements of monitor_bench.py, each returning a JSON-able dict."""

from __future__ import annotations

import cProfile
import gzip
import io
import itertools
import os
import pstats
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import psutil
from bench_agent import AgentProcess, Scrape
from bench_floor import Floor
from bench_tree import Tree
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric

from monitor.collector import EVENTS, LIMITS, PRESSURE, STATS, Collector, CollectorConfig
from monitor.exporter.render import ExportView, Format, families, write
from monitor.exporter.writer import LineCache
from monitor.recording import Recording, RecordingWriter
from monitor.sample import HostSample
from monitor.snapshot import Snapshot
from runtime.cgroupfs.openfiles import FD_RESERVE, raise_fd_rlimit

# Every file the collector keeps fresh each poll (the event files by notification).
STAT_FILES = [name for name, _, _ in (*STATS, *EVENTS, *PRESSURE)]
# The guest's own limit, before poll_vs_floor raises it: the agents start with it.
NOFILE = resource.getrlimit(resource.RLIMIT_NOFILE)
SERVE_FD_LIMIT = 32768  # corral serve --fd-limit's default
LIMIT_FILES = [name for name, _, _ in LIMITS]


def say(message: str) -> None:
    print(f"monitor_bench: {message}", file=sys.stderr, flush=True)


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
        "values": values,
    }


def _slab_bytes() -> int:
    """Slab in /proc/meminfo, in bytes (where the kernel's per-open-file memory lives)."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Slab:"):
                return int(line.split()[1]) * 1024
    return 0


def _raise_nofile(limit: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, limit), max(hard, limit)))


def _profile(collector: Collector, polls: int) -> str:
    prof = cProfile.Profile()
    for _ in range(polls):
        prof.runcall(collector.poll)
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
    return out.getvalue()


def poll_vs_floor(tree: Tree, floor_bin: str, rounds: int, recording: str) -> dict[str, Any]:
    # As `corral serve` sets itself up: --fd-limit 32768, RLIMIT_NOFILE raised toward it
    # (the hard limit too: the bench runs as root).
    config = CollectorConfig(subtree=tree.base, fd_limit=SERVE_FD_LIMIT)
    raise_fd_rlimit(SERVE_FD_LIMIT + FD_RESERVE)
    # Kernel memory of the kept fds (a struct file, a kernfs_open_file and, once read, a
    # seq_file buffer of at least a page each): slab before and after each collector's
    # first polls.
    slab0 = _slab_bytes()
    serve_like = Collector(tree.fs, config)
    serve_like.poll()
    serve_like.poll()
    slab1 = _slab_bytes()
    _raise_nofile(65536)
    # Without the change watch: every file of every cgroup read every poll.
    every_fd = Collector(tree.fs, replace(config, fd_limit=60000, watch=False))
    every_fd.poll()
    every_fd.poll()
    slab2 = _slab_bytes()
    dirs = tree.dirs()
    floor = Floor(floor_bin, dirs, STAT_FILES)
    floor_limits = Floor(floor_bin, dirs, STAT_FILES + LIMIT_FILES)
    times: dict[str, list[float]] = {k: [] for k in ("collector", "all_fds", "floor", "floor23")}
    runs: list[tuple[str, Callable[[], float]]] = [
        ("collector", lambda: _timed(serve_like.poll)),
        ("all_fds", lambda: _timed(every_fd.poll)),
        ("floor", lambda: floor.run().seconds),
        ("floor23", lambda: floor_limits.run().seconds),
    ]
    samples, writes = _rounds(runs, times, rounds, serve_like, recording)
    last = floor.run()
    out: dict[str, Any] = {name: summary(v) for name, v in times.items()}
    out["cgroups"] = len(samples[-1].cgroups)
    out["errors"] = dict(samples[-1].errors)
    out["stat_files"], out["limit_files"] = STAT_FILES, LIMIT_FILES
    out["floor_pass"] = {"files": last.files, "bytes": last.bytes, "missing": last.missing}
    out["fds"] = {
        "collector_open": serve_like.open_fds,
        "collector_bound": serve_like.fd_bound,
        "all_fds_open": every_fd.open_fds,
        "all_fds_bound": every_fd.fd_bound,
        "process": len(os.listdir("/proc/self/fd")),
        "collector_slab_bytes": slab1 - slab0,
        "all_fds_slab_bytes": slab2 - slab1,
    }
    out["recording"] = _recording_stats(recording, samples, writes)
    say("profiling the collector's poll")
    out["profile"] = _profile(serve_like, 3)
    out["profile_all_fds"] = _profile(every_fd, 3)
    for closable in (floor, floor_limits, serve_like, every_fd):
        closable.close()
    return out


def _rounds(
    runs: list[tuple[str, Callable[[], float]]],
    times: dict[str, list[float]],
    rounds: int,
    collector: Collector,
    recording: str,
) -> tuple[list[HostSample], list[float]]:
    """Two warm-up rounds (every fd opened, every parse cached, page cache hot), then
    ``rounds`` timed ones, the order rotating each round; after each, one more poll is
    written to the recording (untimed). Returns the samples written and the write times."""
    for _ in range(2):
        for _, run in runs:
            run()
    samples: list[HostSample] = []
    writes: list[float] = []
    with RecordingWriter(recording, overwrite=True, meta={"bench": "monitor"}) as writer:
        for i in range(rounds):
            for name, run in runs[i % len(runs) :] + runs[: i % len(runs)]:
                times[name].append(run())
            snap = collector.poll()
            t0 = time.perf_counter()
            writer.write(snap.sample, snap.names, collect_seconds=snap.collect_seconds)
            writes.append(time.perf_counter() - t0)
            samples.append(snap.sample)
    return samples, writes


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _recording_stats(path: str, samples: list[HostSample], writes: list[float]) -> dict[str, Any]:
    with Recording(path) as rec:
        sizes = [rec.info(i).size for i in range(len(rec))]
        keys = [rec.info(i).keyframe for i in range(len(rec))]
        t0 = time.perf_counter()
        replayed = [f.sample for f in rec]
        read = (time.perf_counter() - t0) / max(len(rec), 1)
    cgroups = [len(s.cgroups) for s in samples]
    deltas = [size / n for size, key, n in zip(sizes, keys, cgroups, strict=True) if not key]
    return {
        "frames": len(sizes),
        "file_bytes": os.path.getsize(path),
        "bytes_per_cgroup_sample": sum(sizes) / sum(cgroups),
        "keyframe_bytes_per_cgroup": sizes[0] / cgroups[0],
        "delta_bytes_per_cgroup": statistics.median(deltas) if deltas else None,
        "write_seconds": statistics.median(writes),
        "read_seconds": read,
        "round_trip_equal": replayed == samples,
    }


class _Fixed:
    """A registry collector yielding families built once (rendering is what is timed)."""

    def __init__(self, built: list[Metric]) -> None:
        self.built = built

    def collect(self) -> Iterator[Metric]:
        return iter(self.built)


def scrape_vs_render(tree: Tree, port: int, scrapes: int, fresh: int, log: str) -> dict[str, Any]:
    agent = AgentProcess(tree.base, port, "1s", log, NOFILE)
    try:
        ready = agent.wait_ready(900)
        time.sleep(5)
        rss_polling = agent.rss()
        registry, snap = _registry(tree)
        rendered = generate_latest(registry)
        for _ in range(3):
            agent.scrape()
        got: list[Scrape] = []
        renders: list[float] = []
        for i in range(scrapes):
            got.append(agent.scrape())
            if i % 4 == 0:
                renders.append(_timed(lambda: generate_latest(registry)))
        rss_scraped = agent.rss()
        fresh_got = _fresh_scrapes(agent, fresh, got[-1])
        after_new, ready_body = _split_by_poll(got)
        return {
            "ready_seconds": ready,
            "scrape": summary([s.seconds for s in got]),
            "scrape_new_poll": summary(after_new) if after_new else None,
            "scrape_ready_body": summary(ready_body) if ready_body else None,
            "fresh_scrape": summary([s.seconds for s in fresh_got]),
            "render": summary(renders),
            "scrape_bytes": got[-1].size,
            "scrape_samples": got[-1].samples,
            "render_bytes": len(rendered),
            "render_samples": sum(1 for ln in rendered.splitlines() if not ln.startswith(b"#")),
            "cgroups": len(snap.sample.cgroups),
            "render_steps": render_steps(snap),
            "agent_rss": max(rss_polling, rss_scraped, agent.rss()),
            "agent_rss_polling": rss_polling,
            "agent_rss_after_scrapes": rss_scraped,
            "agent_nofile": list(NOFILE),
            "agent_fds": agent.fds(),
        }
    finally:
        agent.stop()


def _registry(tree: Tree) -> tuple[CollectorRegistry, Snapshot]:
    """A registry yielding the exporter's families of a poll of the tree, built once."""
    with Collector(tree.fs, CollectorConfig(subtree=tree.base)) as collector:
        collector.poll()
        snap = collector.poll()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(families(ExportView(snap, {}, 1.0))))
    return registry, snap


def render_steps(snap: Snapshot, reps: int = 5) -> dict[str, Any]:
    """Where the exporter's first scrape of a snapshot spends its time (Rendered._render):
    writing the text with every cgroup's lines written afresh (as when every cgroup changed
    since the last poll: the worst case), with every line cached (no cgroup changed), and
    gzipping it; medians of ``reps``."""
    view = ExportView(snap, {}, 1.0)
    warm = LineCache()
    body = write(view, Format.TEXT, warm)
    return {
        "cold": statistics.median(
            _timed(lambda: write(view, Format.TEXT, LineCache())) for _ in range(reps)
        ),
        "warm": statistics.median(
            _timed(lambda: write(view, Format.TEXT, warm)) for _ in range(reps)
        ),
        "gzip": statistics.median(
            _timed(lambda: gzip.compress(body, compresslevel=1, mtime=0)) for _ in range(reps)
        ),
    }


def _split_by_poll(got: list[Scrape]) -> tuple[list[float], list[float]]:
    """Scrape times split by whether the scrape saw a newer poll than the scrape before it
    (so it rendered that poll itself) or the same one (its body was ready)."""
    new: list[float] = []
    ready: list[float] = []
    for before, scrape in itertools.pairwise(got):
        (new if scrape.collected_at != before.collected_at else ready).append(scrape.seconds)
    return new, ready


def _fresh_scrapes(agent: AgentProcess, wanted: int, last: Scrape) -> list[Scrape]:
    """Scrapes that each come after a new poll (as Prometheus' 15 s against a 1 s poll)."""
    out: list[Scrape] = []
    for _ in range(wanted * 4):
        time.sleep(1.2)
        s = agent.scrape()
        if s.collected_at != last.collected_at:
            out.append(s)
        last = s
        if len(out) == wanted:
            break
    return out


def floor_cpu(tree: Tree, floor_bin: str, passes: int = 30) -> dict[str, Any]:
    """CPU time (user + system) the C floor spends on one pass over the agent_cpu phase's
    cgroups, one pass a second as the agent polls: what reading those files once a second
    costs at the least, in this guest."""
    return floor_cpu_over(floor_bin, tree.dirs(tree.groups[0]), STAT_FILES, passes)


def floor_cpu_over(
    floor_bin: str, dirs: list[str], files: list[str], passes: int
) -> dict[str, Any]:
    """The C floor's CPU time per pass over ``dirs`` x ``files``, passes 1 s apart."""
    floor = Floor(floor_bin, dirs, files)
    try:
        proc = psutil.Process(floor.pid)
        for _ in range(3):
            floor.run()
        before = proc.cpu_times()
        for _ in range(passes):
            time.sleep(1.0)
            floor.run()
        after = proc.cpu_times()
    finally:
        floor.close()
    return {
        "passes": passes,
        "cpu_seconds_per_pass": _spent(before, after) / passes,
        "user_per_pass": (after.user - before.user) / passes,
        "system_per_pass": (after.system - before.system) / passes,
    }


def _spent(before: Any, after: Any) -> float:
    return float((after.user - before.user) + (after.system - before.system))


def agent_cpu(tree: Tree, port: int, seconds: float, log: str) -> dict[str, Any]:
    agent = AgentProcess(tree.groups[0], port, "1s", log, NOFILE)
    try:
        agent.wait_ready(300)
        time.sleep(3)  # past start-up: imports, first polls, every fd opened
        cpu0, times0, t0 = agent.cpu_seconds(), agent.ps.cpu_times(), time.monotonic()
        time.sleep(seconds)
        cpu1, times1, t1 = agent.cpu_seconds(), agent.ps.cpu_times(), time.monotonic()
        samples = agent.scrape()
        return {
            "cgroups": 1 + len([leaf for leaf in tree.leaves if leaf.startswith(tree.groups[0])]),
            "cpu_seconds": cpu1 - cpu0,
            "wall_seconds": t1 - t0,
            "core_fraction": (cpu1 - cpu0) / (t1 - t0),
            "user_fraction": (times1.user - times0.user) / (t1 - t0),
            "system_fraction": (times1.system - times0.system) / (t1 - t0),
            "rss": agent.rss(),
            "scrape_samples": samples.samples,
        }
    finally:
        agent.stop()
