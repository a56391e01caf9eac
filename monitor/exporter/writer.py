"""The exposition text, written straight from a snapshot and the metric catalogue.

prometheus_client's writers take MetricFamily objects: for every sample a Sample tuple, a
labels dict, a sort of its keys and an escape of every label value. At a thousand cgroups that
is ~57,000 samples, and building and writing them took 1.6x as long as a poll (BENCHMARKS.md).
This writer makes the same bytes with a fraction of the work:

- the ``cgroup="..."`` label of each cgroup is escaped once per rendering, not per sample;
- a cgroup's lines for one metric depend only on the objects its sample holds, and the
  collector hands over the previous poll's very object for anything unchanged (an idle
  cgroup's whole CgroupSample), so ``LineCache`` keeps each cgroup's lines keyed by the
  identity of its sample and reuses them while that object lives on.

The output follows prometheus_client's writers to the byte (label keys sorted, the same
float formatting, HELP escaping, ``_total``/``_info`` munging for the text format, ``# UNIT``
and ``# EOF`` for OpenMetrics): tests/unit/test_exporter_writer.py parses both writers'
output for the same snapshot and compares them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import cast

from prometheus_client.utils import floatToGoString

from monitor.exporter.metrics import CGROUP_INFO, CGROUP_METRICS, DeviceName, Metric
from monitor.sample import CgroupSample
from monitor.snapshot import CgroupName

_go_float = cast(Callable[[float], str], floatToGoString)


def format_value(value: float) -> str:
    """prometheus_client's floatToGoString (Go's formatting: an exponent from 1e+07 on,
    +Inf, -Inf, NaN), with the common case (a finite float below 1e+07) done inline."""
    text = repr(value)
    if text.find(".") > 6 or text[-1] in "fn":  # big, or inf/-inf/nan
        return _go_float(value)
    return text


_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", '"': '\\"'})


def escape_value(value: str) -> str:
    """A label value as the exposition formats escape it: backslash, newline, quote."""
    return value.translate(_ESCAPES)


def escape_help(text: str, openmetrics: bool) -> str:
    """HELP text: the text format escapes backslash and newline, OpenMetrics quotes too."""
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if openmetrics else text


def family_names(metric: Metric, openmetrics: bool) -> tuple[str, str, str]:
    """(name in HELP/TYPE lines, TYPE, sample name), as prometheus_client munges them: a
    counter's family is named without ``_total`` in OpenMetrics, an info family without
    ``_info``, and the text format has no info type (a gauge)."""
    if metric.type == "counter":
        base = metric.name.removesuffix("_total")
        return (base if openmetrics else metric.name), "counter", metric.name
    if metric.type == "info":
        base = metric.name.removesuffix("_info")
        return (base, "info", metric.name) if openmetrics else (metric.name, "gauge", metric.name)
    return metric.name, metric.type, metric.name


def header(metric: Metric, help_text: str, openmetrics: bool) -> str:
    name, kind, _ = family_names(metric, openmetrics)
    head = f"# HELP {name} {escape_help(help_text, openmetrics)}\n# TYPE {name} {kind}\n"
    if openmetrics and metric.unit:
        head += f"# UNIT {name} {metric.unit}\n"
    return head


def label_pairs(names: Iterable[str], values: Iterable[str]) -> str:
    """``k="v",...`` sorted by key, values escaped."""
    pairs = sorted(zip(names, values, strict=True))
    return ",".join(f'{k}="{escape_value(v)}"' for k, v in pairs)


class LineCache:
    """Each cgroup's lines, per metric, for the sample object they were written from.

    One LineCache lives as long as the exporter and serves both formats (the sample lines
    are the same in both). ``lines`` returns the cached tuple when ``sample`` is the very
    object last written for that cgroup label; ``retain`` drops cgroups no longer polled."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[CgroupSample, tuple[bytes, ...]]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def lines(self, label: str, sample: CgroupSample, names: DeviceName) -> tuple[bytes, ...]:
        entry = self._entries.get(label)
        if entry is not None and entry[0] is sample:
            return entry[1]
        written = cgroup_lines(label, sample, names)
        self._entries[label] = (sample, written)
        return written

    def retain(self, labels: Iterable[str]) -> None:
        keep = set(labels)
        for label in [k for k in self._entries if k not in keep]:
            del self._entries[label]


def cgroup_lines(label: str, sample: CgroupSample, names: DeviceName) -> tuple[bytes, ...]:
    """One bytes per entry of CGROUP_METRICS: that cgroup's sample lines (b"" for none).
    Bytes, not str: the body is joined from them with no str-to-bytes copy of it all."""
    cgroup = f'{{cgroup="{escape_value(label)}"'
    out: list[bytes] = []
    for name, extract, extra_labels in _EXTRACTORS:
        points = extract(sample, names)
        if not points:
            out.append(b"")
        elif len(points) == 1 and not points[0][0]:
            out.append(f"{name}{cgroup}}} {format_value(points[0][1])}\n".encode())
        else:
            out.append(
                "".join(
                    f"{name}{cgroup},{label_pairs(extra_labels, extra)}}} {format_value(value)}\n"
                    if extra
                    else f"{name}{cgroup}}} {format_value(value)}\n"
                    for extra, value in points
                ).encode()
            )
    return tuple(out)


_EXTRACTORS = [(m.name, m.extract, m.labels) for m in CGROUP_METRICS if m.extract is not None]
assert len(_EXTRACTORS) == len(CGROUP_METRICS), "every per-cgroup metric has an extract"


def info_line(metric: Metric, label: str, name: CgroupName) -> str:
    values = {"cgroup": label, "kind": name.kind, "name": name.name, "id": name.id}
    return f"{metric.name}{{{label_pairs(values.keys(), values.values())}}} 1.0\n"


def body(
    helps: Mapping[str, str],
    per_cgroup: list[tuple[str, tuple[bytes, ...]]],
    info: list[str],
    self_families: list[tuple[Metric, list[str]]],
    openmetrics: bool,
) -> bytes:
    """The whole exposition: per-cgroup families in catalogue order (a family with no
    sample is left out, as prometheus_client's writers would have nothing to say), the
    cgroup info family, then the self-metrics."""
    parts: list[bytes] = []
    for i, metric in enumerate(CGROUP_METRICS):
        first = len(parts) + 1
        parts.append(b"")  # the header's place, filled if the family has a sample
        parts.extend([lines[i] for _, lines in per_cgroup if lines[i]])
        if len(parts) > first:
            parts[first - 1] = header(metric, helps[metric.name], openmetrics).encode()
    text = [header(CGROUP_INFO, helps[CGROUP_INFO.name], openmetrics), *info]
    for metric, lines in self_families:
        text.append(header(metric, helps[metric.name], openmetrics))
        text.extend(lines)
    if openmetrics:
        text.append("# EOF\n")
    parts.append("".join(text).encode())
    return b"".join(parts)
