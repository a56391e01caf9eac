"""One snapshot as Prometheus exposition bytes, rendered once per format and served to every
scrape.

``Rendered`` writes a snapshot lazily, on the first scrape that wants a format, with
``write`` (monitor.exporter.writer: straight from the catalogue, with a per-cgroup line
cache), keeps the bytes and their gzip, and hands the same bytes to every later scrape of
that snapshot. ``families`` and ``render`` are the reference: the same snapshot as
prometheus_client MetricFamily objects through prometheus_client's own writers, which
``write`` must match byte for byte (tests/unit/test_exporter_writer.py) and which the
benchmark times as the peer (generate_latest).
"""

from __future__ import annotations

import enum
import functools
import gzip
import platform
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from types import MappingProxyType

from prometheus_client import exposition
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.metrics_core import Metric as Family
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector

from monitor.exporter.metrics import (
    CATALOGUE,
    CGROUP_INFO,
    CGROUP_METRICS,
    SELF_METRICS,
    Metric,
)
from monitor.exporter.writer import LineCache, body, format_value, info_line, label_pairs
from monitor.snapshot import CgroupName, Snapshot
from runtime.cgroupfs.io import Device, read_device_name

Numeric = CounterMetricFamily | GaugeMetricFamily


class Format(enum.Enum):
    TEXT = "text"
    OPENMETRICS = "openmetrics"


CONTENT_TYPES = {
    Format.TEXT: exposition.CONTENT_TYPE_PLAIN_0_0_4,
    Format.OPENMETRICS: openmetrics.CONTENT_TYPE_LATEST,
}


@functools.cache
def build_labels() -> Mapping[str, str]:
    """corral_build_info's labels: corral's version and Python's (read once: the package
    metadata is parsed with the email parser, which costs more than a poll of 100 cgroups)."""
    try:
        version = metadata.version("corral")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return MappingProxyType({"version": version, "python": platform.python_version()})


@dataclass(frozen=True, slots=True)
class ExportView:
    """Everything one rendering needs: the snapshot, the poll errors counted since start
    (the snapshot holds one poll's), the poll interval (for the HELP texts), sysfs (for
    device names) and corral_build_info's labels."""

    snapshot: Snapshot
    errors_total: Mapping[str, int]
    interval: float
    sysfs: str = "/sys"
    build: Mapping[str, str] = field(default_factory=build_labels)


class DeviceNames:
    """MAJ:MIN -> the kernel's device name (runtime.cgroupfs.io.read_device_name), each
    read once per rendering."""

    def __init__(self, sysfs: str = "/sys") -> None:
        self.sysfs = sysfs
        self._names: dict[Device, str] = {}

    def __call__(self, device: Device) -> str:
        name = self._names.get(device)
        if name is None:
            name = self._names[device] = read_device_name(device, self.sysfs)
        return name


def cgroup_label(path: str) -> str:
    """The ``cgroup`` label: the path below the root, "/" for the root. A directory name
    that is not UTF-8 (os.scandir hands its bytes over as surrogates) is shown with
    backslash escapes, so it cannot break the exposition's encoding."""
    return safe_text(path) if path else "/"


def safe_text(text: str) -> str:
    """``text`` with any undecodable bytes (surrogates) written as backslash escapes."""
    if text.isascii():
        return text
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that did not come from a byte (e.g. JSON)
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def families(view: ExportView) -> list[Family]:
    """Fresh metric families for every catalogue entry, from one snapshot."""
    names = DeviceNames(view.sysfs)
    cgroups = sorted(view.snapshot.sample.cgroups.items())
    out: list[Family] = []
    for metric in CGROUP_METRICS:
        assert metric.extract is not None
        family = _numeric(metric, ("cgroup", *metric.labels), view.interval)
        for path, sample in cgroups:
            for labels, value in metric.extract(sample, names):
                family.add_metric([cgroup_label(path), *labels], value)
        if family.samples:
            out.append(family)
    out.append(_cgroup_info(view))
    out.extend(_self_metrics(view))
    return out


def _help(metric: Metric, interval: float) -> str:
    """The catalogue's text plus where the figure comes from and how old it can be (no
    sample carries a timestamp: cAdvisor's timestamped cached values were its fault)."""
    if metric in SELF_METRICS:
        return f"{metric.help} corral serve polls every {interval:g}s."
    return (
        f"{metric.help} From {metric.source}; polled every {interval:g}s, so as old as"
        " time() - corral_last_collect_timestamp_seconds."
    )


def _numeric(metric: Metric, labels: tuple[str, ...], interval: float) -> Numeric:
    text = _help(metric, interval)
    if metric.type == "counter":
        return CounterMetricFamily(metric.name, text, labels=labels, unit=metric.unit)
    return GaugeMetricFamily(metric.name, text, labels=labels, unit=metric.unit)


def _info(metric: Metric, labels: tuple[str, ...], interval: float) -> InfoMetricFamily:
    name = metric.name.removesuffix("_info")
    return InfoMetricFamily(name, _help(metric, interval), labels=labels)


def _cgroup_info(view: ExportView) -> Family:
    family = _info(CGROUP_INFO, ("cgroup",), view.interval)
    for path in sorted(view.snapshot.sample.cgroups):
        label = cgroup_label(path)
        name = view.snapshot.names.get(path) or CgroupName(path, "cgroup", label)
        info = {"kind": name.kind, "name": name.name, "id": name.id}
        family.add_metric([label], {k: safe_text(v) for k, v in info.items()})
    return family


def self_values(view: ExportView) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Each self-metric's samples: (labels, value)."""
    snap = view.snapshot
    # A cgroup that vanished mid-read is churn, not a failure: an alert on errors must not
    # fire whenever a container stops, so "gone" gets its own counter.
    errors = sorted((k, n) for k, n in view.errors_total.items() if k != "gone")
    vanished = float(view.errors_total.get("gone", 0))
    return {
        "corral_last_collect_timestamp_seconds": [({}, snap.sample.wall_time)],
        "corral_collect_interval_seconds": [({}, view.interval)],
        "corral_collect_duration_seconds": [({}, snap.collect_seconds)],
        "corral_polls_total": [({}, float(snap.seq))],
        "corral_cgroups": [({}, float(len(snap.sample.cgroups)))],
        "corral_collect_errors_total": [({"kind": k}, float(n)) for k, n in errors],
        "corral_cgroups_vanished_total": [({}, vanished)],
        "corral_build_info": [(dict(view.build), 1.0)],
    }


def _self_metrics(view: ExportView) -> Iterator[Family]:
    values = self_values(view)
    for metric in SELF_METRICS:
        if metric.type == "info":
            info = _info(metric, metric.labels, view.interval)
            for labels, _ in values[metric.name]:
                info.add_metric([], labels)
            yield info
            continue
        family = _numeric(metric, metric.labels, view.interval)
        for labels, value in values[metric.name]:
            family.add_metric([labels[k] for k in metric.labels], value)
        yield family


class _Families(Collector):
    """What the exposition writers iterate: the families already built."""

    def __init__(self, built: list[Family]) -> None:
        self._built = built

    def collect(self) -> Iterator[Family]:
        return iter(self._built)


def render(built: list[Family], fmt: Format) -> bytes:
    if fmt is Format.OPENMETRICS:
        data: bytes = openmetrics.generate_latest(_Families(built))  # type: ignore[no-untyped-call]
        return data
    return exposition.generate_latest(_Families(built))


class Rendered:
    """One snapshot's exposition: each (format, gzip) rendered at most once, on demand.

    A scrape reads a ready body without locking; the first scrape that wants a format
    renders it under the lock while others wanting it wait, so no body is built twice.
    ``lines`` (the exporter's, shared by every snapshot) holds each cgroup's sample lines
    for the sample object they came from, so an idle cgroup is written once, not per poll."""

    def __init__(self, view: ExportView, lines: LineCache | None = None) -> None:
        self.view = view
        self._lines = lines if lines is not None else LineCache()
        self._lock = threading.Lock()
        self._bodies: dict[tuple[Format, bool], bytes] = {}

    def body(self, fmt: Format, gzipped: bool = False) -> bytes:
        ready = self._bodies.get((fmt, gzipped))
        if ready is not None:
            return ready
        with self._lock:
            if (fmt, gzipped) not in self._bodies:
                self._render(fmt, gzipped)
            return self._bodies[(fmt, gzipped)]

    def _render(self, fmt: Format, gzipped: bool) -> None:
        plain = self._bodies.get((fmt, False))
        if plain is None:
            plain = self._bodies[(fmt, False)] = write(self.view, fmt, self._lines)
        if gzipped:
            # Level 1: a scrape waits for this; level 6 costs 3x the time for ~15% fewer bytes
            # of an exposition (repetitive text compresses well at any level). mtime=0: the
            # same snapshot always compresses to the same bytes.
            self._bodies[(fmt, True)] = gzip.compress(plain, compresslevel=1, mtime=0)


def write(view: ExportView, fmt: Format, lines: LineCache | None = None) -> bytes:
    """The exposition of ``view`` in ``fmt``, by monitor.exporter.writer: the same bytes
    prometheus_client's writers make from ``families(view)``."""
    cache = lines if lines is not None else LineCache()
    openmetrics = fmt is Format.OPENMETRICS
    names = DeviceNames(view.sysfs)
    cgroups = sorted(view.snapshot.sample.cgroups.items())
    labels = [cgroup_label(path) for path, _ in cgroups]
    cache.retain(labels)  # cgroups no longer polled: their lines go (here, not in the poll)
    per_cgroup = [
        (label, cache.lines(label, sample, names))
        for label, (_, sample) in zip(labels, cgroups, strict=True)
    ]
    helps = {m.name: _help(m, view.interval) for m in CATALOGUE}
    info = []
    for label, (path, _) in zip(labels, cgroups, strict=True):
        name = view.snapshot.names.get(path) or CgroupName(path, "cgroup", label)
        safe = CgroupName(path, safe_text(name.kind), safe_text(name.name), safe_text(name.id))
        info.append(info_line(CGROUP_INFO, label, safe))
    return body(helps, per_cgroup, info, _self_lines(view), openmetrics)


def _self_lines(view: ExportView) -> list[tuple[Metric, list[str]]]:
    values = self_values(view)
    return [
        (m, [_sample_line(m.name, labels, value) for labels, value in values[m.name]])
        for m in SELF_METRICS
    ]


def _sample_line(name: str, labels: Mapping[str, str], value: float) -> str:
    pairs = f"{{{label_pairs(labels.keys(), labels.values())}}}" if labels else ""
    return f"{name}{pairs} {format_value(value)}\n"
