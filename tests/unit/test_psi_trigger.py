"""PSI triggers against the host's real cgroup2 (its *.pressure files exist on every cgroup
even with no controller enabled): validation before any write, arming, firing under CPU
contention, a removed cgroup reported as gone, and wake() ending a wait."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
import time

import pytest

from runtime.cgroupfs import CgroupFS, CgroupGone, InvalidLimit
from runtime.cgroupfs.psi_trigger import (
    UNPRIVILEGED_WINDOW_US,
    PsiTrigger,
    TriggerSet,
    TriggerSpec,
    TriggerUnavailable,
)

CAP_SYS_RESOURCE = 24


def has_cap_sys_resource() -> bool:
    with open("/proc/self/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_SYS_RESOURCE & 1)
    return False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("some 150000 499999", "window: invalid value 499999: microseconds 500000..10000000"),
        ("some 150000 10000001", "window: invalid value 10000001: microseconds 500000..10000000"),
        ("some 1000001 1000000", "threshold: invalid value 1000001: microseconds 1..1000000"),
        ("some 0 1000000", "threshold: invalid value 0: microseconds 1..1000000"),
        ("avg 150000 1000000", "line: invalid value 'avg': 'some' or 'full'"),
        ("some 150000", "trigger: invalid value 'some 150000': 'some|full THRESHOLD_US"),
        ("some -5 1000000", "invalid value 'some -5 1000000'"),
        ("some 1.5 1000000", "invalid value 'some 1.5 1000000'"),
    ],
)
def test_bad_trigger_is_refused_naming_the_value(text: str, message: str) -> None:
    with pytest.raises(InvalidLimit) as e:
        TriggerSpec.parse(text)
    assert message in str(e.value)


def test_spec_round_trips_as_the_kernel_text() -> None:
    spec = TriggerSpec.parse("full 500000 10000000")
    assert spec == TriggerSpec("full", 500_000, 10_000_000)
    assert str(spec) == "full 500000 10000000"
    assert str(TriggerSpec("some", 500_000, 500_000)) == "some 500000 500000"


def test_trigger_on_a_missing_cgroup_is_gone(host: tuple[CgroupFS, str]) -> None:
    fs, parent = host
    with pytest.raises(CgroupGone):
        PsiTrigger(fs, f"{parent}/nope", "memory", TriggerSpec("some", 150_000, 2_000_000))


def test_second_trigger_on_one_fd_is_busy_so_arm_replaces_by_reopening(
    host: tuple[CgroupFS, str],
) -> None:
    fs, cgroup = host
    trigger = PsiTrigger(fs, cgroup, "memory", TriggerSpec("some", 150_000, 2_000_000))
    with pytest.raises(OSError) as busy:
        os.write(trigger.fileno(), b"some 300000 2000000")
    trigger.close()
    assert busy.value.errno == errno.EBUSY
    with TriggerSet(fs) as triggers:
        assert triggers.arm(cgroup, "memory", "some 150000 2000000")
        assert not triggers.arm(cgroup, "memory", "some 150000 2000000")  # same: kept
        assert triggers.arm(cgroup, "memory", "some 300000 2000000")  # another: new fd
        assert triggers.keys() == [(cgroup, "memory")]
        assert triggers.arm(cgroup, "io", "some 150000 2000000")
        triggers.keep_only([(cgroup, "io")])
        assert triggers.keys() == [(cgroup, "io")]


def test_short_window_needs_cap_sys_resource(host: tuple[CgroupFS, str]) -> None:
    fs, cgroup = host
    spec = TriggerSpec("some", 150_000, 1_000_000)
    assert spec.window_us % UNPRIVILEGED_WINDOW_US
    if has_cap_sys_resource():
        PsiTrigger(fs, cgroup, "memory", spec).close()
    else:
        with pytest.raises(TriggerUnavailable, match="CAP_SYS_RESOURCE"):
            PsiTrigger(fs, cgroup, "memory", spec)


def test_trigger_fires_under_cpu_contention(host: tuple[CgroupFS, str]) -> None:
    """More spinning processes than CPUs in one cgroup: its cpu ``some`` stall grows at
    nearly wall-clock rate, far past 100 ms per 2 s."""
    fs, cgroup = host
    with TriggerSet(fs) as triggers:
        triggers.arm(cgroup, "cpu", "some 100000 2000000")
        quiet = triggers.wait(0.3)
        assert quiet.fired == () and quiet.gone == ()
        spinners = [_spin(fs, cgroup) for _ in range(3 * (os.cpu_count() or 1))]
        try:
            deadline = time.monotonic() + 15
            fired: tuple[tuple[str, str], ...] = ()
            while not fired and time.monotonic() < deadline:
                fired = triggers.wait(deadline - time.monotonic()).fired
            assert fired == ((cgroup, "cpu"),)
        finally:
            for p in spinners:
                p.kill()
                p.wait()


def test_removed_cgroup_is_reported_gone_and_disarmed(host: tuple[CgroupFS, str]) -> None:
    fs, parent = host
    child = f"{parent}/child"
    fs.create(child)
    with TriggerSet(fs) as triggers:
        triggers.arm(child, "memory", "some 150000 2000000")
        fs.remove(child)
        wake = triggers.wait(5)
        assert wake.gone == ((child, "memory"),)
        assert len(triggers) == 0


def test_wake_ends_a_wait_at_once(host: tuple[CgroupFS, str]) -> None:
    fs, cgroup = host
    with TriggerSet(fs) as triggers:
        triggers.arm(cgroup, "memory", "some 150000 2000000")
        threading.Timer(0.2, triggers.wake).start()
        start = time.monotonic()
        wake = triggers.wait(10)
        assert time.monotonic() - start < 5
        assert wake.fired == () and wake.gone == ()


def _spin(fs: CgroupFS, cgroup: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", "while True: pass"],
        preexec_fn=lambda: fs.move(os.getpid(), cgroup),
    )
