"""The monitor's benchmarks (issue 5, "Performance"), run inside `corral machine`.

    corral machine run --memory 2G --cpus 2 --out OUT -- \
        .venv/bin/python bench/monitor_bench.py --out OUT --floor OUT/floor_read

Builds BASE/gNN/cNNN (1,000 leaves with one busybox sleep each), then measures, interleaved:

1. the collector's full poll (in this process) against bench/floor_read.c opening, reading
   and closing each stat file of the same cgroups once per pass; the collector as `corral
   serve` configures it in this guest, and with fds for every file;
2. /metrics scraped from a `corral serve` process over loopback against prometheus_client's
   generate_latest rendering the same families in this process; that agent's RSS;
3. the CPU time of a `corral serve` polling 100 cgroups every second.

Each poll is also written to a recording (bytes per cgroup per sample). Results go to
OUT/results.json for bench/report.py, which writes BENCHMARKS.md on the host.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import time
from typing import Any

from bench_phases import agent_cpu, floor_cpu, poll_vs_floor, say, scrape_vs_render
from bench_tree import Tree, build, destroy

from runtime.cgroupfs import CgroupFS

BASE = "corral-bench"


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="Directory for results.json (host-visible).")
    p.add_argument("--floor", required=True, help="The compiled bench/floor_read.c.")
    p.add_argument("--groups", type=int, default=10)
    p.add_argument("--per-group", type=int, default=100)
    p.add_argument("--polls", type=int, default=21, help="Interleaved rounds of phase 1.")
    p.add_argument("--scrapes", type=int, default=100)
    p.add_argument("--fresh-scrapes", type=int, default=20)
    p.add_argument("--cpu-seconds", type=float, default=30.0)
    p.add_argument("--port", type=int, default=9847)
    p.add_argument("--busybox", default=shutil.which("busybox") or "/bin/busybox")
    return p.parse_args(argv)


def _guest() -> dict[str, Any]:
    uname = platform.uname()
    return {
        "kernel": uname.release,
        "uname": " ".join(uname),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "python": platform.python_version(),
        "in_machine": os.environ.get("CORRAL_IN_MACHINE") == "1",
        "nofile": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
    }


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if not os.environ.get("CORRAL_IN_MACHINE"):
        say("run me inside `corral machine run` (see bench/README.md)")
        return 2
    fs = CgroupFS()
    results: dict[str, Any] = {"guest": _guest(), "args": vars(args)}
    say(f"building {args.groups} x {args.per_group} cgroups with one sleep each")
    started = time.monotonic()
    tree = build(fs, BASE, args.groups, args.per_group, args.busybox)
    try:
        results["tree"] = {
            "leaves": len(tree.leaves),
            "cgroups": len(tree.dirs()),
            "processes": len(tree.procs),
            "build_seconds": time.monotonic() - started,
        }
        _run_phases(args, tree, results)
    finally:
        say("removing the tree")
        destroy(tree)
    path = os.path.join(args.out, "results.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
    say(f"wrote {path}")
    return 0


def _run_phases(args: argparse.Namespace, tree: Tree, results: dict[str, Any]) -> None:
    say(f"phase 1: {args.polls} polls vs the C floor, interleaved")
    recording = os.path.join(args.out, "bench.rec")
    results["poll"] = poll_vs_floor(tree, args.floor, args.polls, recording)
    say(f"phase 2: {args.scrapes} scrapes vs generate_latest")
    results["scrape"] = scrape_vs_render(
        tree, args.port, args.scrapes, args.fresh_scrapes, os.path.join(args.out, "agent.log")
    )
    say(f"phase 3: agent CPU at 100 cgroups for {args.cpu_seconds:g} s")
    results["cpu"] = agent_cpu(
        tree, args.port + 1, args.cpu_seconds, os.path.join(args.out, "agent-cpu.log")
    )
    results["cpu"]["floor"] = floor_cpu(tree, args.floor)


if __name__ == "__main__":
    raise SystemExit(main())
