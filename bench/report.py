"""Writes BENCHMARKS.md from the results.json monitor_bench.py left in the --out directory.

    python bench/report.py bench/out/results.json BENCHMARKS.md

Runs on the host after the machine has powered off; every figure comes from the one run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

TARGETS = {"poll": 1.0, "scrape": 0.15, "rss_mb": 60.0, "cpu": 0.02}


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def _poll_rows(poll: dict[str, Any], agent_fds: int, hard_nofile: int) -> list[str]:
    n, floor = poll["cgroups"], poll["floor"]["median"]
    files, fds = len(poll["stat_files"]), poll["fds"]
    rows = []
    for key, what in (
        (
            "collector",
            f"collector as `corral serve` sets it up (fd bound {fds['collector_bound']}; limits "
            "and event files read when inotify says they changed, every file re-read every 30 "
            "polls)",
        ),
        (
            "all_fds",
            f"collector without the change watch (every file read every poll; fd bound "
            f"{fds['all_fds_bound']})",
        ),
    ):
        ratio = poll[key]["median"] / floor
        rows.append(
            f"| Full poll, {n} cgroups: {what} | {_ms(poll[key]['median'])} | C floor, "
            f"{files} stat files each: {_ms(floor)} | {ratio:.2f}x | <= 1.0x | "
            f"{_met(ratio <= TARGETS['poll'])} |"
        )
    floor23 = poll["floor23"]["median"]
    ratio23 = poll["all_fds"]["median"] / floor23
    rows.append(
        f"| The poll without the watch vs a floor that also reads the "
        f"{len(poll['limit_files'])} limit files, as that poll does | "
        f"{_ms(poll['all_fds']['median'])} | {_ms(floor23)} | {ratio23:.2f}x | (information) | |"
    )
    rows.append(
        f"| Open fds the collector holds | {fds['collector_open']} "
        f"({fds['collector_open'] / n:.1f} per cgroup; bound {fds['collector_bound']}); without "
        f"the watch {fds['all_fds_open']}; the `corral serve` process of the scrape test: "
        f"{agent_fds} | files the floor reads per pass: {poll['floor_pass']['files']} "
        "| | bounded, reported | reported |"
    )
    if "collector_slab_bytes" in fds:
        mine, every = fds["collector_slab_bytes"], fds["all_fds_slab_bytes"]
        rows.append(
            f"| Kernel memory the kept fds hold (growth of Slab in /proc/meminfo over the first "
            f"polls: struct file, kernfs_open_file and a seq_file buffer each) | "
            f"{mine / 2**20:.1f} MB ({mine / max(fds['collector_open'], 1):.0f} B per fd); "
            f"without the watch {every / 2**20:.1f} MB | the floor holds none | | "
            "(information) | |"
        )
    return rows


def _scrape_row(scrape: dict[str, Any], key: str, what: str) -> str:
    render = scrape["render"]["median"]
    ratio = scrape[key]["median"] / render
    return (
        f"| {what} | {_ms(scrape[key]['median'])} | generate_latest of the same "
        f"{scrape['render_samples']} samples: {_ms(render)} | {ratio:.3f}x | <= 0.15x | "
        f"{_met(ratio <= TARGETS['scrape'])} |"
    )


def _scrape_rows(scrape: dict[str, Any]) -> list[str]:
    size = f"{scrape['scrape_samples']} samples, {scrape['scrape_bytes'] / 1e6:.1f} MB"
    rows = [
        _scrape_row(
            scrape, "scrape", f"Scrape of /metrics over loopback, median of "
            f"{scrape['scrape']['n']} back to back ({size})"
        ),
    ]  # fmt: skip
    for key, what in (
        ("scrape_new_poll", "of which the scrapes that came first after a new poll"),
        ("scrape_ready_body", "of which the scrapes that found the body rendered"),
        ("fresh_scrape", "Scrape each after a new poll (as Prometheus' 15 s scrapes of a 1 s "
         "poller)"),
    ):  # fmt: skip
        if scrape.get(key):
            rows.append(_scrape_row(scrape, key, f"{what}, median of {scrape[key]['n']}"))
    steps = scrape.get("render_steps")
    if steps:
        render = scrape["render"]["median"]
        rows.append(
            f"| Writing the text of a new poll in which every cgroup changed (no line cached: "
            f"the worst case for the first scrape of a poll), plus gzip ({_ms(steps['gzip'])}) "
            f"| {_ms(steps['cold'])} | generate_latest: {_ms(render)} | "
            f"{steps['cold'] / render:.3f}x | (information) | |"
        )
        rows.append(
            f"| Writing the text of a new poll in which no cgroup changed (every line cached) "
            f"| {_ms(steps['warm'])} | generate_latest: {_ms(render)} | "
            f"{steps['warm'] / render:.3f}x | (information) | |"
        )
    mb = scrape["agent_rss"] / 2**20
    rows.append(
        f"| Agent RSS (`corral serve`, {scrape['cgroups']} cgroups, after the scrapes; polling "
        "only: "
        f"{scrape['agent_rss_polling'] / 2**20:.1f} MB) | {mb:.1f} MB | | | < 60 MB | "
        f"{_met(mb < TARGETS['rss_mb'])} |"
    )
    return rows


def _other_rows(results: dict[str, Any]) -> list[str]:
    cpu, rec = results["cpu"], results["poll"]["recording"]
    frac = cpu["core_fraction"]
    delta = rec["delta_bytes_per_cgroup"]
    return [
        f"| Agent CPU polling {cpu['cgroups']} cgroups every 1 s, {cpu['wall_seconds']:.0f} s "
        f"(process CPU time / wall{_user_system(cpu, 'fraction')}) | {frac * 100:.2f}% of one "
        "core | | | < 2% | "
        f"{_met(frac < TARGETS['cpu'])} |",
        *_floor_cpu_row(cpu),
        *_native_cpu_row(results.get("native_cpu")),
        f"| Recording, {results['poll']['cgroups']} cgroups, {rec['frames']} frames: bytes per "
        f"cgroup per sample | {rec['bytes_per_cgroup_sample']:.1f} overall; "
        f"{delta:.1f} per delta frame; {rec['keyframe_bytes_per_cgroup']:.1f} in the keyframe "
        f"| | | (information) | round trip equal: {rec['round_trip_equal']} |",
    ]


def _user_system(figures: dict[str, Any], suffix: str) -> str:
    user, system = figures.get(f"user_{suffix}"), figures.get(f"system_{suffix}")
    if user is None or system is None:
        return ""
    return f"; user {user * 100:.2f}%, system {system * 100:.2f}%"


def _floor_cpu_row(cpu: dict[str, Any]) -> list[str]:
    floor = cpu.get("floor")
    if not floor:
        return []
    frac = floor["cpu_seconds_per_pass"]  # one pass a second
    return [
        f"| The C floor reading the same {cpu['cgroups']} cgroups' 14 files once a second "
        f"(its CPU time per pass, mean of {floor['passes']} passes 1 s apart"
        f"{_user_system(floor, 'per_pass')}) | | "
        f"{frac * 100:.2f}% of one core | {cpu['core_fraction'] / frac:.2f}x | (information: "
        "the least any reader of these files pays in this emulated guest) | |"
    ]


def _native_cpu_row(native: dict[str, Any] | None) -> list[str]:
    if not native:
        return []
    agent, floor = native["agent"], native["floor"]
    frac = agent["user_fraction"] + agent["system_fraction"]
    floor_frac = floor["user_per_pass"] + floor["system_per_pass"]
    ratio = f"{frac / floor_frac:.2f}x" if floor_frac else ""
    return [
        f"| Native, on this host's own kernel ({native['kernel']}, no emulation): `corral serve` "
        f"polling {native['cgroups']} cgroups of {native['root']} every 1 s, vs the C floor "
        f"reading the same files once a second; this hybrid host's cgroup2 has no controllers, "
        f"so both read only the {len(native['files'])} files such a cgroup has "
        f"({', '.join(native['files'])}) | {frac * 100:.2f}% of one core | C floor: "
        f"{floor_frac * 100:.2f}% | {ratio} | < 2% | {_met(frac < TARGETS['cpu'])} (natively, "
        "with fewer files) |"
    ]


def _size_rows(sizes: dict[str, Any]) -> list[str]:
    rows = []
    for key, what in (("fixture", "the captured fixture tree"), ("host", "this host's cgroup2")):
        m = sizes[key]
        low, high = m["cgroups"]
        count = f"{low}" if low == high else f"{low}-{high}"
        rows.append(
            f"| Recording of {what} ({m['root']}, {count} cgroups, {m['frames']} polls "
            f"{m['interval_seconds']:g} s apart): bytes per cgroup per sample | "
            f"{m['bytes_per_cgroup_sample']:.1f} overall; {m['delta_bytes_per_cgroup']:.1f} per "
            f"delta frame; {m['keyframe_bytes_per_cgroup']:.1f} in the keyframe | | | "
            "(information) | |"
        )
    return rows


def _commit() -> str:
    """The commit this report is written at (each part's run date is in its section: a part
    can be re-run alone), marked when the tree had uncommitted changes."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
        return done.stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + (" with uncommitted changes" if git("status", "--porcelain") else "")


def render(results: dict[str, Any], sizes: dict[str, Any] | None = None) -> str:
    guest, tree = results["guest"], results["tree"]
    host = " ".join(os.uname())
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (bench/monitor_bench.py in `corral machine`, then "
        "bench/report.py); do not edit by hand. Every ratio is against a peer or floor "
        "measured in the same run, interleaved.",
        "",
        f"- Run: {guest['date']}; guest kernel {guest['kernel']} ({guest['cpus']} vCPUs, "
        "2 GiB, qemu TCG: no KVM on this host), Python "
        f"{guest['python']}; host: {host}; report written at commit {_commit()}",
        f"- Tree: {tree['cgroups']} cgroups ({tree['leaves']} leaves, each with one busybox "
        f"`sleep`, {tree['processes']} processes), cpu, memory, io and pids enabled",
        "",
        "## Monitor (issue 5)",
        "",
        "| Measure | corral | Peer or floor (same run) | Ratio | Target | Result |",
        "|---|---|---|---|---|---|",
        *_poll_rows(results["poll"], results["scrape"]["agent_fds"], guest["nofile"][1]),
        *_scrape_rows(results["scrape"]),
        *_other_rows(results),
        *(_size_rows(sizes) if sizes else []),
        "",
        *NOTES,
        _emulation_note(results["poll"]),
    ]
    return "\n".join(lines) + "\n"


NOTES = [
    "Notes:",
    "",
    "- The guest is emulated (qemu TCG), so absolute times are several times what the "
    "same code takes natively; the ratios compare like with like, since the collector, "
    "the C floor, the scrapes and generate_latest run in the same guest, interleaved.",
    "- Full poll: `Collector.poll()` timed in-process (discovery walk, every file of "
    "every cgroup, parsing, naming, models). The floor (bench/floor_read.c) opens, reads "
    "until EOF and closes each stat file of the same cgroups, with its paths built "
    "beforehand and no directory walk. The collector keeps the files it reads every poll "
    "open (up to its fd bound) and reads them with pread; it reads the limit files and the "
    "event files (cgroup.events, memory.events, pids.events) only when inotify reports a write "
    "or a kernfs notification for them (runtime/cgroupfs/watch.py; tests/kernel/test_watch.py "
    "shows the kernel sends both), and re-reads every file of a cgroup every 30 polls whatever "
    "the watch said. The floor reads all 14 files every pass.",
    "- Scrape: a new HTTP connection per scrape from a client process to a `corral serve` "
    "process, text format, timed from request to the last byte. generate_latest renders "
    "families built once from a poll of the same cgroups, in the bench process.",
    "- Recordings (monitor.recording): the recording loop writes every poll as a frame, a "
    "keyframe every 60 frames and deltas against the frame before between them; the fixture "
    "tree is one capture, so its delta frames show the fixed cost of a frame (about 50 "
    "bytes), and the host's own cgroup2 is whatever this build machine holds at the time.",
    "- The agents start with the guest's own RLIMIT_NOFILE, as `corral serve` started from "
    "a shell or by systemd would; running as root, they raise the hard limit toward "
    "--fd-limit (fs.nr_open at most).",
    "- Medians; the min, max and every value are in bench/out/results.json, with a cProfile "
    "of three polls.",
]


def _emulation_note(poll: dict[str, Any]) -> str:
    per_file = poll["floor"]["median"] / poll["floor_pass"]["files"] * 1e6
    return (
        f"- Emulation: the C floor's open, read and close costs {per_file:.1f} us per file in "
        "this guest; REFERENCES.md measured 5.3-5.6 us natively on a machine like the host, "
        f"about {per_file / 5.45:.0f}x less. CPU fractions here are not native figures; "
        "they are reported as measured, against the target as written."
    )


def _sections(out: str) -> list[str]:
    """The enforcer's (and later parts') sections, from their own result files when present."""
    import report_enforce

    lines: list[str] = []
    for name, render_part in (
        ("enforce_sim.json", report_enforce.simulation),
        ("enforce_machine.json", report_enforce.machine),
    ):
        path = os.path.join(out, name)
        if os.path.exists(path):
            with open(path) as f:
                lines += render_part(json.load(f))
    import report_oci

    oci = {}
    for name, where in (("oci.json", "machine"), ("oci_host.json", "this host")):
        path = os.path.join(out, name)
        if os.path.exists(path):
            with open(path) as f:
                oci[where] = json.load(f)
    if oci:
        lines += report_oci.section(oci)
    return lines


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: report.py RESULTS.json BENCHMARKS.md", file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        results = json.load(f)
    native_path = os.path.join(os.path.dirname(argv[1]), "native_cpu.json")
    if os.path.exists(native_path):  # written on the host by native_cpu.py
        with open(native_path) as f:
            results["native_cpu"] = json.load(f)
    sizes = None
    host_sizes = os.path.join(os.path.dirname(argv[1]), "recording_host.json")
    if os.path.exists(host_sizes):  # written on the host by recording_size.py
        with open(host_sizes) as f:
            sizes = json.load(f)
    text = render(results, sizes)
    text += "\n".join(_sections(os.path.dirname(argv[1])))
    with open(argv[2], "w") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
