"""The enforcer's machine tests' harness: a policy written as TOML and loaded as a user's would
be, the enforcement loop run in a thread on the test's cgroup subtree, and the workloads
(programs run with kernel_harness.python_argv) the controllers are tried against."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from kernel_harness import PAGE

from enforce.actions import AuditEntry, Outcome
from enforce.audit import AuditLog, read_audit
from enforce.loop import EnforcementLoop
from enforce.policy import load_policy
from monitor.collector import Collector, CollectorConfig
from runtime.cgroupfs import CgroupFS


@contextmanager
def enforcing(
    fs: CgroupFS, root: str, tmp_path: Path, policy_toml: str, *, dry_run: bool = False
) -> Iterator[EnforcementLoop]:
    """The loop, started in a thread, polling only ``root`` and below (the managed root the
    policy names). Stopped on the way out; stopping must take under a second."""
    path = tmp_path / "policy.toml"
    path.write_text(policy_toml)
    policy = load_policy(path)
    audit = AuditLog(str(tmp_path / f"audit-{time.monotonic_ns()}.jsonl"))
    collector = Collector(fs, CollectorConfig(subtree=root))
    loop = EnforcementLoop(policy, fs, audit=audit, dry_run=dry_run, collector=collector)
    loop.start()
    try:
        yield loop
    finally:
        began = time.monotonic()
        loop.stop(timeout=10)
        stopping = time.monotonic() - began
        collector.close()
        assert not loop.running, "the enforcement loop did not stop"
        assert stopping < 1.5, f"stopping the loop took {stopping:.2f} s"


def audit_of(loop: EnforcementLoop) -> list[AuditEntry]:
    """Every entry so far, from the file the loop appends to (what a user would read)."""
    assert loop.audit.path is not None
    return read_audit(loop.audit.path)


def wait_for_entry(
    loop: EnforcementLoop, match: Callable[[AuditEntry], bool], timeout: float, what: str
) -> AuditEntry:
    deadline = time.monotonic() + timeout
    while True:
        for entry in loop.audit.recent():
            if match(entry):
                return entry
        if time.monotonic() > deadline:
            shown = [f"{e.file} {e.outcome.value} {e.old}->{e.new} {e.reason}"
                     for e in loop.audit.recent()[-15:]]  # fmt: skip
            raise AssertionError(f"no audit entry for {what} within {timeout:g} s: {shown}")
        time.sleep(0.05)


def applied(file: str, cgroup: str) -> Callable[[AuditEntry], bool]:
    return lambda e: e.file == file and e.cgroup == cgroup and e.outcome is Outcome.APPLIED


# Prints "ready"; for "grow TOTAL STEP PAUSE" allocates TOTAL bytes in STEP pieces, touching
# every page (a slice assignment, fast even under TCG), printing "at BYTES UNIX_TIME" after
# each piece and sleeping PAUSE seconds between pieces, then "grown BYTES". Keeps it all.
GROWER = f"""
    import sys, time
    PAGE = {PAGE}
    kept, held = [], 0
    print("ready", flush=True)
    for line in sys.stdin:
        total, step, pause = int(line.split()[1]), int(line.split()[2]), float(line.split()[3])
        done = 0
        while done < total:
            size = min(step, total - done)
            buf = bytearray(size)
            buf[::PAGE] = b"\\x01" * len(range(0, size, PAGE))
            kept.append(buf)
            done += size
            held += size
            print("at", held, time.time(), flush=True)
            if pause:
                time.sleep(pause)
        print("grown", held, flush=True)
"""

# Spins on one CPU until killed; prints "spinning" first.
SPINNER = """
    print("spinning", flush=True)
    while True:
        pass
"""

# Prints "ready"; on "go N" forks up to N children that wait on a pipe, stopping at the first
# refusal, and prints "forked KIDS ERRNO"; on end of input releases and reaps them.
FORK_STORM = """
    import errno, os, sys
    print("ready", flush=True)
    tries = int(sys.stdin.readline().split()[1])
    r, w = os.pipe()
    kids, refusal = 0, "none"
    for _ in range(tries):
        try:
            pid = os.fork()
        except OSError as e:
            refusal = errno.errorcode[e.errno]
            break
        if pid == 0:
            os.close(w)
            os.read(r, 1)
            os._exit(0)
        kids += 1
    print("forked", kids, refusal, flush=True)
    sys.stdin.readline()
    os.close(w)
    while True:
        try:
            os.wait()
        except ChildProcessError:
            break
"""
