"""Start-to-exit time of `true` in a busybox bundle under corral, runc and crun, and the peak
RSS of corral's per-container helper (the shim). Runs inside `corral machine` (real cgroup v2;
crun refuses hybrid hosts) and writes OUT/oci.json.

    python bench/oci_bench.py --out DIR [--runs 30] [--warmup 3] [--rss-runs 5]
                              [--runtimes corral runc crun] [--name oci]

``--runtimes corral runc --name oci_host`` measures on a hybrid-cgroup host (where crun
refuses to run) into OUT/oci_host.json; ratios are given for the peers measured.

Timing: every runtime uses its foreground verb (`runc run`, `crun run`,
`corral run --bundle --rm`): create, start, wait for exit and delete in one command, timed
from fork to reaped exit by the bench process. The runs are interleaved (one of each per
round, the order rotated every round) so that drift in the emulated machine hits all three
alike; the first ``--warmup`` rounds are not counted. The bundle is `runc spec` over a busybox
rootfs (tools/make_bundle.py) with process.args ["true"], the same directory for all three.

Helper RSS: a detached corral container running `sleep`; the shim's pid from the container's
state.json (shim_pid); its /proc/PID/status VmHWM (the kernel's peak resident set) read every
10 ms until the shim exits, so the last value read is the shim's peak over its whole life
but the last moments. The largest over ``--rss-runs`` containers is reported.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from make_bundle import busybox_bundle, edit_config  # noqa: E402

from runtime.cgroupfs import CgroupFS  # noqa: E402

CORRAL = (sys.executable, "-m", "corral")
RUNTIMES = ("corral", "runc", "crun")
TARGETS = {"corral_over_runc": 1.0, "corral_over_crun": 2.0, "helper_rss_mb": 12.0}
# corral's containers go under a cgroup parent of the bench's own, removed at the end (the
# runtime leaves its parent in place, as docker leaves its slice).
PARENT = f"corral-oci-bench-{os.getpid()}"
ENV = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1",
           CORRAL_CGROUP_PARENT=PARENT)  # fmt: skip


def say(message: str) -> None:
    print(f"oci_bench: {message}", file=sys.stderr, flush=True)


def argv_for(runtime: str, bundle: Path, state: Path, *extra: str) -> list[str]:
    cid = f"bench-{uuid.uuid4().hex[:12]}"
    if runtime == "corral":
        return [*CORRAL, "run", "--state-dir", str(state / "corral"), "--name", cid, *extra,
                "--bundle", str(bundle)]  # fmt: skip
    return [runtime, "--root", str(state / runtime), "run", "--bundle", str(bundle), cid]


def time_one(runtime: str, bundle: Path, state: Path) -> float:
    argv = argv_for(runtime, bundle, state, "--rm")
    start = time.perf_counter()
    out = subprocess.run(argv, env=ENV, capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"oci_bench: {' '.join(argv)}: exit {out.returncode}: {out.stderr}")
    return elapsed


def summary(values: list[float]) -> dict[str, Any]:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return {"median": statistics.median(values), "p90": p90, "min": ordered[0],
            "max": ordered[-1], "n": len(values), "values": values}  # fmt: skip


def interleaved(
    bundle: Path, state: Path, runs: int, warmup: int, runtimes: Sequence[str]
) -> dict[str, Any]:
    times: dict[str, list[float]] = {rt: [] for rt in runtimes}
    for round_ in range(warmup + runs):
        shift = round_ % len(runtimes)
        for runtime in [*runtimes[shift:], *runtimes[:shift]]:
            elapsed = time_one(runtime, bundle, state)
            if round_ >= warmup:
                times[runtime].append(elapsed)
        if round_ % 10 == 9:
            say(f"round {round_ + 1}/{warmup + runs}")
    return {rt: summary(values) for rt, values in times.items()}


def read_hwm(pid: int) -> int | None:
    """VmHWM of ``pid`` in bytes (proc(5)), None once it has exited."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def shim_peak(bundle: Path, state: Path) -> int:
    """Start a detached container, follow its shim's VmHWM until the shim exits."""
    out = subprocess.run(argv_for("corral", bundle, state, "-d", "--rm"), env=ENV,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"oci_bench: detached corral run: exit {out.returncode}: {out.stderr}")
    cid = out.stdout.strip().splitlines()[-1]
    pattern = str(state / "corral" / "containers" / f"{cid}*" / "state.json")
    shim = None
    deadline = time.monotonic() + 60
    while shim is None and time.monotonic() < deadline:
        for path in glob.glob(pattern):
            with open(path, encoding="utf-8") as f:
                shim = json.load(f).get("shim_pid")
        time.sleep(0.01)
    if shim is None:
        raise SystemExit(f"oci_bench: no shim_pid in {pattern} within 60 s")
    peak = 0
    while (hwm := read_hwm(shim)) is not None:
        peak = max(peak, hwm)
        time.sleep(0.01)
    return peak


def helper_rss(work: Path, state: Path, runs: int, seconds: float) -> dict[str, Any]:
    bundle = busybox_bundle(work / "sleep", ("sleep", f"{seconds:g}"), CORRAL)
    peaks = [shim_peak(bundle, state) for _ in range(runs)]
    return {"peak_bytes": max(peaks), "peaks_bytes": peaks, "container": f"sleep {seconds:g}",
            "source": "/proc/SHIM/status VmHWM"}  # fmt: skip


def versions() -> dict[str, str]:
    found = {}
    for runtime in ("runc", "crun"):
        text = subprocess.run([runtime, "--version"], capture_output=True, text=True).stdout
        found[runtime] = text.splitlines()[0] if text else "?"
    found["kernel"] = os.uname().release
    return found


def report(timing: dict[str, Any], rss: dict[str, Any], runs: int, warmup: int) -> dict[str, Any]:
    corral = timing["corral"]["median"]
    peers = [rt for rt in timing if rt != "corral"]
    ratios = {f"corral_over_{rt}": corral / timing[rt]["median"] for rt in peers}
    rss_mb = rss["peak_bytes"] / (1 << 20)
    met = {name: ratios[name] <= TARGETS[name] for name in ratios}
    met["helper_rss_mb"] = rss_mb <= TARGETS["helper_rss_mb"]
    git = ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]
    commit = subprocess.run(git, capture_output=True, text=True, check=False).stdout.strip()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "commit": commit or "unknown",
        "verb": "run (create+start+wait+delete in one foreground command)",
        "workload": "true in a runc-spec busybox bundle",
        "runs": runs, "warmup": warmup, "versions": versions(),
        "seconds": timing, "ratios": ratios, "helper_rss": {**rss, "peak_mb": rss_mb},
        "targets": TARGETS, "met": met,
    }  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rss-runs", type=int, default=5)
    parser.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=list(RUNTIMES))
    parser.add_argument("--name", default="oci", help="OUT/NAME.json")
    opts = parser.parse_args(argv)
    if "corral" not in opts.runtimes or len(set(opts.runtimes)) < 2:
        parser.error("--runtimes needs corral and at least one peer")
    if opts.runs < 1 or opts.warmup < 0 or opts.rss_runs < 1:
        parser.error("--runs and --rss-runs must be at least 1, --warmup at least 0")
    work = Path(tempfile.mkdtemp(prefix="corral-oci-bench-", dir="/tmp"))
    try:
        bundle = busybox_bundle(work / "true", ("true",), CORRAL)
        edit_config(bundle, lambda c: c.update(hostname="bench"))
        state = work / "state"
        runtimes = list(dict.fromkeys(opts.runtimes))
        say(f"{opts.warmup}+{opts.runs} interleaved rounds of {', '.join(runtimes)}")
        timing = interleaved(bundle, state, opts.runs, opts.warmup, runtimes)
        say("helper RSS")
        rss = helper_rss(work, state, opts.rss_runs, 2.0)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        fs = CgroupFS.discover()
        if fs.exists(PARENT):
            fs.remove(PARENT, recursive=True)
    result = report(timing, rss, opts.runs, opts.warmup)
    opts.out.mkdir(parents=True, exist_ok=True)
    (opts.out / f"{opts.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    for rt in runtimes:
        s = timing[rt]
        say(f"{rt}: median {s['median'] * 1e3:.1f} ms, p90 {s['p90'] * 1e3:.1f} ms")
    say(f"ratios {result['ratios']}, helper peak {rss_mb_text(result)}; met {result['met']}")
    return 0


def rss_mb_text(result: dict[str, Any]) -> str:
    return f"{result['helper_rss']['peak_mb']:.1f} MB"


if __name__ == "__main__":
    sys.exit(main())
