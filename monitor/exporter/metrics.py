"""The metric catalogue: every series corral exports, with its type, unit and kernel file.

Conventions (docs/metrics.md, generated from this table): ``corral_`` prefix, base units in
the name, ``_total`` only on counters, no per-CPU series, no timestamps. Every per-cgroup
series has the label ``cgroup`` (the path below the cgroup2 root, "/" for the root); the only
other labels are ``device`` (io), ``direction`` (io.max), ``event`` (memory.events) and, on
the self-metrics, ``kind`` (errors) and the info labels. A limit that is ``max`` has no
series at all: not 0 (cAdvisor's fault: "unlimited" then reads as "nothing allowed") and not
+Inf (which breaks every usage/limit ratio).

memory.stat keys are separate names (``corral_memory_anon_bytes``, ...) rather than one
``corral_memory_stat_bytes{kind}``: the keys overlap (file includes shmem, file_mapped and
file_dirty; kernel includes slab and kernel_stack), so a sum over a ``kind`` label would
be meaningless, and Prometheus' rule is that summing over a label must make sense.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from monitor.model import working_set
from monitor.sample import CgroupSample
from runtime.cgroupfs.formats import MAX, IntOrMax
from runtime.cgroupfs.io import Device

Type = Literal["counter", "gauge", "info"]
Labels = tuple[str, ...]
Point = tuple[Labels, float]  # values of the labels after ``cgroup``, and the value
DeviceName = Callable[[Device], str]
Extract = Callable[[CgroupSample, DeviceName], Sequence[Point]]
US = 1e6  # microseconds per second


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric family. ``name`` is the exposed name (counters end in ``_total``);
    ``unit`` the OpenMetrics unit ("" when none); ``source`` the kernel file (and key)."""

    name: str
    type: Type
    unit: str
    source: str
    help: str
    labels: Labels = ()
    extract: Extract | None = None  # per-cgroup metrics; None for self-metrics and info

    @property
    def file(self) -> str:
        return self.source.split()[0].rstrip(",")


def _one(value: float | None) -> list[Point]:
    return [] if value is None else [((), float(value))]


def _cpu(key: str, per: float = 1.0) -> Extract:
    """A cpu.stat field; ``per`` converts microseconds to seconds by division, which is
    exact where multiplying by 1e-6 is not (18742806 us -> 18.742806, not ...5999998)."""
    return lambda s, _: _one(None if s.cpu is None else _divided(getattr(s.cpu, key), per))


def _divided(value: int | None, per: float) -> float | None:
    return None if value is None else value / per


def _field(get: Callable[[CgroupSample], float | None]) -> Extract:
    return lambda s, _: _one(get(s))


def _limit(get: Callable[[CgroupSample], IntOrMax | None]) -> Extract:
    """A limit: absent when the file is missing or says ``max``."""

    def extract(s: CgroupSample, _: DeviceName) -> list[Point]:
        value = get(s)
        return [] if value is None or value is MAX else [((), float(value))]

    return extract


def _stat(key: str) -> Extract:
    return lambda s, _: _one(None if s.memory_stat is None else s.memory_stat.get(key))


def _io(key: str) -> Extract:
    def extract(s: CgroupSample, name: DeviceName) -> list[Point]:
        return [((name(d),), float(getattr(st, key))) for d, st in sorted((s.io or {}).items())]

    return extract


def _io_max(read: str, write: str) -> Extract:
    def extract(s: CgroupSample, name: DeviceName) -> list[Point]:
        out: list[Point] = []
        for device, limit in sorted((s.limits.io_max or {}).items()):
            for direction, key in (("read", read), ("write", write)):
                value = getattr(limit, key)
                if value is not MAX:
                    out.append(((name(device), direction), float(value)))
        return out

    return extract


def _pressure(resource: str, line: str) -> Extract:
    def extract(s: CgroupSample, _: DeviceName) -> list[Point]:
        pressure = s.pressure.get(resource)
        stalled = None if pressure is None else getattr(pressure, line)
        return [] if stalled is None else [((), stalled.total_usec / US)]

    return extract


def _memory_events(s: CgroupSample, _: DeviceName) -> list[Point]:
    ev = s.memory_events
    if ev is None:
        return []
    pairs: list[tuple[str, int | None]] = [("low", ev.low), ("high", ev.high), ("max", ev.max)]
    pairs += [("oom", ev.oom)]
    pairs += [("oom_kill", ev.oom_kill), ("oom_group_kill", ev.oom_group_kill)]
    return [((event,), float(n)) for event, n in pairs if n is not None]


def _flag(get: Callable[[CgroupSample], bool | None]) -> Extract:
    return lambda s, _: _one(None if get(s) is None else float(bool(get(s))))


_C: Type = "counter"
_G: Type = "gauge"
CPU_AND_IO: list[Metric] = [
    Metric("corral_cpu_usage_seconds_total", _C, "seconds", "cpu.stat usage_usec",
           "CPU time used by the cgroup's tasks, descendants included.", (),
           _cpu("usage_usec", US)),
    Metric("corral_cpu_user_seconds_total", _C, "seconds", "cpu.stat user_usec",
           "CPU time spent in user mode.", (), _cpu("user_usec", US)),
    Metric("corral_cpu_system_seconds_total", _C, "seconds", "cpu.stat system_usec",
           "CPU time spent in kernel mode.", (), _cpu("system_usec", US)),
    Metric("corral_cpu_periods_total", _C, "", "cpu.stat nr_periods",
           "Enforcement periods of this cgroup's own cpu.max that had runnable tasks.", (),
           _cpu("nr_periods")),
    Metric("corral_cpu_throttled_periods_total", _C, "", "cpu.stat nr_throttled",
           "Periods in which this cgroup's own cpu.max throttled it (ancestors' limits are not"
           " counted here).", (), _cpu("nr_throttled")),
    Metric("corral_cpu_throttled_seconds_total", _C, "seconds", "cpu.stat throttled_usec",
           "Time the cgroup's tasks were held back by its own cpu.max.", (),
           _cpu("throttled_usec", US)),
    Metric("corral_cpu_bursts_total", _C, "", "cpu.stat nr_bursts",
           "Periods in which the cgroup ran into its cpu.max.burst allowance.", (),
           _cpu("nr_bursts")),
    Metric("corral_cpu_burst_seconds_total", _C, "seconds", "cpu.stat burst_usec",
           "CPU time used beyond the quota out of the cpu.max.burst allowance.", (),
           _cpu("burst_usec", US)),
    Metric("corral_io_read_bytes_total", _C, "bytes", "io.stat rbytes",
           "Bytes read from the block device.", ("device",), _io("rbytes")),
    Metric("corral_io_written_bytes_total", _C, "bytes", "io.stat wbytes",
           "Bytes written to the block device.", ("device",), _io("wbytes")),
    Metric("corral_io_reads_total", _C, "", "io.stat rios",
           "Read operations issued to the block device.", ("device",), _io("rios")),
    Metric("corral_io_writes_total", _C, "", "io.stat wios",
           "Write operations issued to the block device.", ("device",), _io("wios")),
    Metric("corral_io_discarded_bytes_total", _C, "bytes", "io.stat dbytes",
           "Bytes discarded (trimmed) on the block device.", ("device",), _io("dbytes")),
    Metric("corral_io_discards_total", _C, "", "io.stat dios",
           "Discard operations issued to the block device.", ("device",), _io("dios")),
]  # fmt: skip

MEMORY: list[Metric] = [
    Metric("corral_memory_usage_bytes", _G, "bytes", "memory.current",
           "Memory charged to the cgroup and its descendants, page cache included.", (),
           _field(lambda s: s.memory_current)),
    Metric("corral_memory_peak_bytes", _G, "bytes", "memory.peak",
           "Highest memory.current since the cgroup was created (Linux 5.19+).", (),
           _field(lambda s: s.memory_peak)),
    Metric("corral_memory_working_set_bytes", _G, "bytes",
           "memory.current, memory.stat inactive_file",
           "Working set: memory.current minus inactive_file (cAdvisor's and the kubelet's"
           " definition; the cache the kernel would reclaim first is left out).", (),
           _field(working_set)),
    Metric("corral_memory_swap_usage_bytes", _G, "bytes", "memory.swap.current",
           "Swap used by the cgroup and its descendants.", (), _field(lambda s: s.swap_current)),
    Metric("corral_memory_events_total", _C, "", "memory.events",
           "Times the cgroup or a descendant hit a memory boundary (event: low, high, max,"
           " oom, oom_kill, oom_group_kill).", ("event",), _memory_events),
    Metric("corral_memory_page_faults_total", _C, "", "memory.stat pgfault",
           "Page faults incurred by the cgroup's tasks.", (), _stat("pgfault")),
    Metric("corral_memory_major_page_faults_total", _C, "", "memory.stat pgmajfault",
           "Major page faults (served from disk) incurred by the cgroup's tasks.", (),
           _stat("pgmajfault")),
]  # fmt: skip

# The memory.stat byte figures exported, each as corral_memory_<key>_bytes (see the module
# docstring for why not one family with a label). Other keys are counters or kernel detail.
MEMORY_STAT_BYTES = {
    "anon": "Anonymous memory (heap, stacks, private mappings), swap-backed.",
    "file": "Page cache: file-backed memory, shmem and tmpfs included.",
    "kernel": "Kernel memory: slab, stacks, page tables, percpu, vmalloc and more.",
    "kernel_stack": "Kernel stacks of the cgroup's tasks.",
    "pagetables": "Page tables of the cgroup's tasks.",
    "percpu": "Per-CPU kernel data structures.",
    "sock": "Network socket buffers.",
    "vmalloc": "vmalloc'ed kernel memory.",
    "shmem": "Shared memory and tmpfs (part of file, swap-backed).",
    "file_mapped": "Page cache mapped into processes with mmap (part of file).",
    "file_dirty": "Page cache modified but not yet written back (part of file).",
    "file_writeback": "Page cache being written back now (part of file).",
    "swapcached": "Memory cached in swap and in memory at once.",
    "anon_thp": "Anonymous memory in transparent huge pages (part of anon).",
    "inactive_anon": "Anonymous memory on the inactive LRU list.",
    "active_anon": "Anonymous memory on the active LRU list.",
    "inactive_file": "Page cache on the inactive LRU list: reclaimed first.",
    "active_file": "Page cache on the active LRU list.",
    "unevictable": "Memory that cannot be reclaimed (mlocked, ramfs).",
    "slab": "Kernel slab memory (slab_reclaimable + slab_unreclaimable, part of kernel).",
    "slab_reclaimable": "Kernel slab memory that can be reclaimed (dentries, inodes).",
    "slab_unreclaimable": "Kernel slab memory that cannot be reclaimed.",
}
MEMORY += [
    Metric(f"corral_memory_{key}_bytes", _G, "bytes", f"memory.stat {key}", text, (), _stat(key))
    for key, text in MEMORY_STAT_BYTES.items()
]

_WHO = {"some": "at least one of the cgroup's tasks was", "full": "all its non-idle tasks were"}
PRESSURE: list[Metric] = [
    Metric(f"corral_pressure_{res}_{name}_seconds_total", _C, "seconds",
           f"{res}.pressure {line} total",
           f"Time in which {_WHO[line]} stalled waiting for {what} (PSI, {line} line).", (),
           _pressure(res, line))
    for res, what in (("cpu", "CPU"), ("memory", "memory"), ("io", "io"))
    for name, line in (("waiting", "some"), ("stalled", "full"))
]  # fmt: skip

TASKS: list[Metric] = [
    Metric("corral_pids", _G, "", "pids.current",
           "Tasks (processes and threads) in the cgroup and its descendants.", (),
           _field(lambda s: s.pids_current)),
    Metric("corral_pids_forks_refused_total", _C, "", "pids.events max",
           "fork() and clone() calls that failed with EAGAIN because this cgroup or an"
           " ancestor reached pids.max.", (),
           _field(lambda s: None if s.pids_events is None else s.pids_events.max)),
    Metric("corral_processes", _G, "", "cgroup.procs",
           "Processes directly in this cgroup (descendants not included).", (),
           _field(lambda s: s.nr_procs)),
    Metric("corral_cgroup_populated", _G, "", "cgroup.events populated",
           "1 when the cgroup or a descendant has a live process, else 0.", (),
           _flag(lambda s: None if s.events is None else s.events.populated)),
    Metric("corral_cgroup_frozen", _G, "", "cgroup.events frozen",
           "1 when the cgroup is frozen (cgroup.freeze), else 0.", (),
           _flag(lambda s: None if s.events is None else s.events.frozen)),
]  # fmt: skip

_ABSENT = " No series when the limit is 'max'."
LIMITS: list[Metric] = [
    Metric("corral_cpu_limit_cores", _G, "", "cpu.max",
           "CPU limit in cores (quota / period)." + _ABSENT, (),
           _field(lambda s: None if s.limits.cpu_max is None else s.limits.cpu_max.cores)),
    Metric("corral_cpu_weight", _G, "", "cpu.weight",
           "Relative CPU share among siblings, 1..10000 (default 100).", (),
           _field(lambda s: s.limits.cpu_weight)),
    Metric("corral_memory_limit_max_bytes", _G, "bytes", "memory.max",
           "Hard memory limit: above it the kernel reclaims, then OOM-kills." + _ABSENT, (),
           _limit(lambda s: s.limits.memory_max)),
    Metric("corral_memory_limit_high_bytes", _G, "bytes", "memory.high",
           "Memory throttling threshold: above it tasks are slowed and reclaimed from,"
           " never killed." + _ABSENT, (), _limit(lambda s: s.limits.memory_high)),
    Metric("corral_memory_limit_low_bytes", _G, "bytes", "memory.low",
           "Best-effort memory protection from reclaim (0 = none)." + _ABSENT, (),
           _limit(lambda s: s.limits.memory_low)),
    Metric("corral_memory_limit_min_bytes", _G, "bytes", "memory.min",
           "Hard memory protection from reclaim (0 = none)." + _ABSENT, (),
           _limit(lambda s: s.limits.memory_min)),
    Metric("corral_memory_swap_limit_max_bytes", _G, "bytes", "memory.swap.max",
           "Hard swap limit." + _ABSENT, (), _limit(lambda s: s.limits.swap_max)),
    Metric("corral_io_limit_bytes_per_second", _G, "", "io.max rbps wbps",
           "Bandwidth limit on the device (direction: read, write)." + _ABSENT,
           ("device", "direction"), _io_max("rbps", "wbps")),
    Metric("corral_io_limit_operations_per_second", _G, "", "io.max riops wiops",
           "IOPS limit on the device (direction: read, write)." + _ABSENT,
           ("device", "direction"), _io_max("riops", "wiops")),
    Metric("corral_pids_limit", _G, "", "pids.max",
           "Most tasks the cgroup and its descendants may hold." + _ABSENT, (),
           _limit(lambda s: s.limits.pids_max)),
]  # fmt: skip

# Series per cgroup, in exposition order.
CGROUP_METRICS: list[Metric] = [*CPU_AND_IO, *MEMORY, *PRESSURE, *TASKS, *LIMITS]

CGROUP_INFO = Metric(
    "corral_cgroup_info", "info", "", "corral's naming of the cgroup path",
    "1 for every cgroup polled; kind is container, service, scope, slice, docker, podman,"
    " kubernetes or cgroup; name and id as corral names it.", ("kind", "name", "id"),
)  # fmt: skip

# Corral's own figures about the poll that produced the data (no cgroup label).
SELF_METRICS: list[Metric] = [
    Metric("corral_last_collect_timestamp_seconds", _G, "seconds", "the poller",
           "Unix time at which the data now served was read: every corral_ series is as old"
           " as time() minus this."),
    Metric("corral_collect_interval_seconds", _G, "seconds", "corral serve --interval",
           "How often the poller reads every cgroup."),
    Metric("corral_collect_duration_seconds", _G, "seconds", "the poller",
           "How long the poll that produced the data now served took."),
    Metric("corral_polls_total", _C, "", "the poller", "Polls completed since start."),
    Metric("corral_cgroups", _G, "", "the poller", "Cgroups read by the last poll."),
    Metric("corral_collect_errors_total", _C, "", "the poller",
           "Poll failures since start, by kind: parse, read, discovery, internal"
           " (monitor/collector.py), poll (a whole poll failed).", ("kind",)),
    Metric("corral_cgroups_vanished_total", _C, "", "the poller",
           "Cgroups removed while a poll was reading them (ENOENT/ENODEV), since start: normal"
           " churn, not an error; they are left out of that poll."),
    Metric("corral_build_info", "info", "", "corral", "corral's version and Python's.",
           ("version", "python")),
]  # fmt: skip

CATALOGUE: list[Metric] = [*CGROUP_METRICS, CGROUP_INFO, *SELF_METRICS]


def markdown(enforcer: Sequence[Metric] = ()) -> str:
    """docs/metrics.md: the catalogue as a table, then ``enforcer``'s families (enforce.metrics
    .FAMILIES: monitor does not import enforce). tests/unit/test_exporter_docs.py fails when
    the file is stale and rewrites it when run with CORRAL_UPDATE_GOLDEN=1."""
    head = [
        "# corral's metrics",
        "",
        "Generated from the catalogue in `monitor/exporter/metrics.py`; do not edit by hand."
        " Regenerate with `CORRAL_UPDATE_GOLDEN=1 .venv/bin/pytest"
        " tests/unit/test_exporter_docs.py`.",
        "",
        "`corral serve` serves these at http://127.0.0.1:9847/metrics: port"
        " 9847 by default, `--listen HOST:PORT` to change it; text format, or OpenMetrics"
        " when the Accept header asks for it; gzip on request. /healthz answers 200 while"
        " the newest poll is at most three intervals old, else 503 with the reason.",
        "",
        "- Every per-cgroup series has the label `cgroup`: the path below the cgroup2 root,"
        ' `"/"` for the root. The only other labels are `device` (the kernel\'s name of the'
        " block device, DEVNAME in /sys/dev/block/MAJ:MIN/uevent, else MAJ:MIN), `direction`"
        " (read, write), `event` (memory.events keys) and `kind` (poll errors).",
        "- A limit that is `max` has no series: not 0, not +Inf.",
        "- Samples carry no timestamps. Every HELP text says how often corral polls, and every"
        " series is as old as `time() - corral_last_collect_timestamp_seconds`.",
        "- Limits and the event files (cgroup.events, memory.events, pids.events) are read when"
        " inotify reports a change to them (a write, or the kernel's own notification), and every"
        " file of a cgroup at least once per `--recheck-every` polls (30 by default): a limit"
        " written through another cgroup namespace's mount of cgroup2, which raises no"
        " notification here, shows within that many polls.",
        "- memory.stat keys are separate metrics, not one family with a label: they overlap"
        " (file includes shmem and file_mapped; kernel includes slab), so a sum over such a"
        " label would be meaningless.",
        "",
        "| name | type | unit | labels | kernel file | what it is |",
        "|---|---|---|---|---|---|",
    ]
    rows = [_row(m) for m in CATALOGUE]
    if enforcer:
        rows += [
            "",
            "## The enforcer's metrics",
            "",
            "With `corral serve --policy`, the enforcer's families follow the cgroups' in every"
            " scrape, as of the same poll (`enforce/metrics.py`). The audit log holds every"
            " decision in full; these count them.",
            "",
            "| name | type | unit | labels | written by | what it is |",
            "|---|---|---|---|---|---|",
            *(_row(m) for m in enforcer),
        ]
    return "\n".join([*head, *rows, ""])


def _row(m: Metric) -> str:
    labels = ("cgroup", *m.labels) if m.extract is not None or m is CGROUP_INFO else m.labels
    cells = [f"`{m.name}`", m.type, m.unit, ", ".join(labels), f"`{m.source}`", m.help]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
