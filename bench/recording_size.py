"""Recording sizes on the host (run by `make bench` before the machine boots): bytes per
cgroup per sample for the captured fixture tree and for this host's real cgroup2 tree.

    python bench/recording_size.py OUT.json [--polls 20] [--interval 1]

The fixture tree is a single capture, so its later frames repeat the first: they show the
fixed cost of a frame. The host's tree is polled live, every ``--interval`` seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from monitor.collector import Collector
from monitor.recording import Recording, RecordingWriter
from runtime.cgroupfs import CgroupFS

FIXTURE = Path(__file__).resolve().parent.parent / "tests/fixtures/cgroupfs/6.1.0-56-amd64"


def measure(fs: CgroupFS, polls: int, interval: float, path: str) -> dict[str, Any]:
    cgroups: list[int] = []
    with Collector(fs) as collector, RecordingWriter(path, overwrite=True) as writer:
        for i in range(polls):
            if i:
                time.sleep(interval)
            snap = collector.poll()
            writer.write(snap.sample, snap.names, collect_seconds=snap.collect_seconds)
            cgroups.append(len(snap.sample.cgroups))
    with Recording(path) as rec:
        sizes = [rec.info(i).size for i in range(len(rec))]
    return {
        "root": str(fs.root),
        "cgroups": [min(cgroups), max(cgroups)],
        "frames": polls,
        "interval_seconds": interval,
        "bytes_per_cgroup_sample": writer.bytes_per_cgroup_sample,
        "keyframe_bytes_per_cgroup": sizes[0] / cgroups[0],
        "delta_bytes_per_cgroup": sum(sizes[1:]) / sum(cgroups[1:]),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out")
    p.add_argument("--polls", type=int, default=20)
    p.add_argument("--interval", type=float, default=1.0)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="corral-recsize-") as tmp:
        shutil.copytree(FIXTURE, os.path.join(tmp, "tree"))
        fixture = CgroupFS(os.path.join(tmp, "tree"), verify=False)
        out = {
            "fixture": measure(fixture, args.polls, 0.0, os.path.join(tmp, "f.rec")),
            "host": measure(CgroupFS.discover(), args.polls, args.interval, f"{tmp}/h.rec"),
        }
    out["fixture"]["root"] = str(FIXTURE.relative_to(FIXTURE.parents[3]))
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
