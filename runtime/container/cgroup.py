"""Each container's cgroup under corral's parent: checked, created with its limits, updated,
killed and removed (cgroup-v2.rst; runc's libcontainer/cgroups/fs2 does the same steps).

- corral's parent (default ``corral`` under the cgroup2 root) is made on first use with the
  controllers the root enables for its children, plus any a requested limit needs (enabled
  down from the root, as runc's cgroupfs driver does). It only ever has children: cgroup v2's
  "no internal processes" rule forbids processes in a cgroup whose subtree_control is set.
- A limit whose controller the root's cgroup.controllers lacks is refused before anything is
  made (on a hybrid host memory, cpu, io, pids and cpuset are bound to cgroup v1). With no
  limit asked, a container still gets a cgroup: cpu.stat, the *.pressure files, cgroup.kill
  and cgroup.freeze work without any controller.
- Limits are written memory.max before memory.swap.max and memory.high with O_NONBLOCK (a
  write to it can otherwise block the writer in reclaim). A failed write undoes the step:
  create removes the new cgroup, update writes back what each file held.
- remove: cgroup.kill (Linux 5.14+) or, on older kernels, SIGKILL to every pid in
  cgroup.procs until none is left; then wait for cgroup.events ``populated 0`` and rmdir the
  subtree bottom-up (rmdir fails with EBUSY while a process remains).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from runtime.cgroupfs import CgroupError, CgroupFS, CgroupGone, InvalidLimit, InvalidPath
from runtime.cgroupfs.core import read_cgroup_events
from runtime.cgroupfs.cpu import validate_cpu_max, validate_cpu_weight
from runtime.cgroupfs.formats import MAX, IntOrMax, format_int_or_max, parse_id_list
from runtime.cgroupfs.fs import join, normalize
from runtime.cgroupfs.io import IO_MAX_KEYS, RATE_MAX, Device, IoMax, device_exists, parse_io_max
from runtime.cgroupfs.memory import read_memory_events, read_memory_limit, validate_memory_limit
from runtime.cgroupfs.mounts import cgroup_layout, read_mountinfo
from runtime.cgroupfs.pids import validate_pids_max
from runtime.container.defaults import DEFAULT_PARENT as DEFAULT_PARENT
from runtime.container.limits import ContainerLimits, IoLimit

# The controllers a container may use, in the order a parent enables them.
CONTROLLERS = ("cpuset", "cpu", "io", "memory", "pids")
CONTROLLER_OF = {
    "memory": "memory",
    "memory_high": "memory",
    "memory_swap": "memory",
    "cpus": "cpu",
    "cpu_weight": "cpu",
    "cpuset_cpus": "cpuset",
    "pids_limit": "pids",
    "io": "io",
}
# The limit files in the order they are written (and read back for inspect).
LIMIT_FILES = (
    "cpuset.cpus",
    "cpu.weight",
    "cpu.max",
    "pids.max",
    "memory.max",
    "memory.swap.max",
    "memory.high",
    "io.max",
)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")
_POLL_MAX = 0.05


class LimitUnavailable(CgroupError):
    """A limit this host's cgroup2 cannot enforce: names the option and the controller."""

    def __init__(self, option: str, value: str, controller: str, reason: str) -> None:
        super().__init__(
            f"{option} {value}: cannot be enforced: the {controller} controller of cgroup v2 "
            f"is unavailable ({reason}); refused rather than ignored. `corral doctor` shows "
            "how to free the controller, or run corral in `corral machine`"
        )
        self.option = option
        self.controller = controller


class CgroupExists(CgroupError):
    """create() was given a name whose cgroup already exists."""


@dataclass(frozen=True)
class _Write:
    """One write planned: ``value`` into interface file ``file``, for ``option given``."""

    file: str
    value: str
    option: str
    given: str


class ContainerCgroups:
    """The containers' cgroups, children of ``parent`` in the cgroup2 hierarchy ``fs``.

    ``use_kill_file`` None uses cgroup.kill where the kernel has it; False forces the
    SIGKILL-every-pid loop of kernels before 5.14.
    """

    def __init__(
        self,
        fs: CgroupFS | None = None,
        parent: str = DEFAULT_PARENT,
        *,
        mountinfo: str = "/proc/self/mountinfo",
        use_kill_file: bool | None = None,
    ) -> None:
        self._fs = fs if fs is not None else CgroupFS.discover(mountinfo)
        self.parent = normalize(parent)
        if not self.parent:
            raise InvalidPath(f"parent {parent!r}: give a cgroup below the root, like 'corral'")
        self._mountinfo = mountinfo
        self._use_kill_file = use_kill_file

    @property
    def fs(self) -> CgroupFS:
        return self._fs

    @property
    def root(self) -> str:
        return str(self._fs.root)

    def path_of(self, name: str) -> str:
        """``<parent>/<name>``; ``name`` like a docker container name or id."""
        if not NAME.fullmatch(name):
            raise InvalidPath(
                f"container cgroup name {name!r}: expected letters, digits, '_', '.' or '-', "
                "starting with a letter or digit, at most 255 characters"
            )
        return join(self.parent, name)

    # -- checks ---------------------------------------------------------------------------

    def check(self, limits: ContainerLimits) -> None:
        """LimitUnavailable for the first limit whose controller the root does not offer."""
        offered = self._fs.controllers("")
        for field, option, value in limits.asked():
            controller = CONTROLLER_OF[field]
            if controller not in offered:
                raise LimitUnavailable(option, value, controller, self._missing(controller))

    def _missing(self, controller: str) -> str:
        """Why the root lacks ``controller``, in `corral doctor`'s words."""
        where = f"not in {self._fs.root}/cgroup.controllers"
        v1 = cgroup_layout(read_mountinfo(self._mountinfo)).v1_mounts_of(controller)
        if v1:
            return f"{where}: bound to cgroup v1 here (at {' and '.join(v1.values())})"
        return f"{where}: this kernel lacks it or it is disabled on the kernel command line"

    def ensure_parent(self, need: Iterable[str] = ()) -> list[str]:
        """Create the parent when missing and enable, for its children, the controllers the
        root enables for its own plus ``need``; returns the controllers enabled there."""
        fs = self._fs
        offered, enabled, need = fs.controllers(""), fs.subtree_control(""), set(need)
        wanted = [c for c in CONTROLLERS if c in offered and (c in enabled or c in need)]
        fs.create(self.parent, exist_ok=True)
        fs.delegate(self.parent, wanted)
        fs.enable_controllers(self.parent, wanted)
        return wanted

    # -- create / update ------------------------------------------------------------------

    def create(self, name: str, limits: ContainerLimits) -> str:
        """mkdir ``<parent>/<name>`` and write ``limits``; nothing is left if any step fails."""
        path = self.path_of(name)
        self.check(limits)
        plan = self._plan(path, limits, memory=limits.memory)
        if self._fs.exists(path):
            raise CgroupExists(f"{self._fs.path(path)}: cgroup already exists")
        self.ensure_parent(CONTROLLER_OF[f] for f, _, _ in limits.asked())
        self._check_cpuset(path, limits)
        try:
            self._fs.create(path)
        except CgroupError as e:
            if self._fs.exists(path):
                raise CgroupExists(str(e)) from None
            raise
        try:
            self._preflight(path, plan)
            for write in plan:
                self._write(path, write)
        except BaseException:
            with contextlib.suppress(CgroupError):  # the first error is the one to report
                self.remove(path)
            raise
        return path

    def update(self, path: str, limits: ContainerLimits) -> None:
        """Write the limits given (only those) to the existing cgroup ``path``; every check
        runs first, and a write the kernel refuses puts back what the earlier ones changed.

        ``--memory-swap`` without ``--memory`` uses the cgroup's memory.max as the memory
        part; ``--memory`` alone leaves memory.swap.max (the swap part) as it is.
        """
        path = normalize(path)
        if not self._fs.exists(path):
            raise CgroupGone(path)
        self.check(limits)
        memory: IntOrMax | None = limits.memory
        if memory is None and limits.memory_swap is not None:
            memory = read_memory_limit(self._fs, path, "memory.max")
        plan = self._plan(path, limits, memory=memory)
        self._check_cpuset(path, limits)
        self._preflight(path, plan)
        undo = [_Write(w.file, self._undo_value(path, w), w.option, w.given) for w in plan]
        done: list[_Write] = []
        try:
            for write, old in zip(plan, undo, strict=True):
                self._write(path, write)
                done.append(old)
        except BaseException:
            for old in reversed(done):
                with contextlib.suppress(CgroupError):  # the first error is the one to report
                    self._write(path, old)
            raise

    def _plan(self, path: str, limits: ContainerLimits, memory: IntOrMax | None) -> list[_Write]:
        """The writes, in LIMIT_FILES order, each value checked by its controller's validator."""
        asked = {field: (option, text) for field, option, text in limits.asked()}
        out: list[_Write] = []

        def plan(file: str, field: str, value: str) -> None:
            out.append(_Write(file, value, *asked[field]))

        if limits.cpuset_cpus is not None:
            plan("cpuset.cpus", "cpuset_cpus", limits.cpuset_cpus)
        if limits.cpu_weight is not None:
            plan("cpu.weight", "cpu_weight", str(validate_cpu_weight(limits.cpu_weight)))
        if limits.cpus is not None:
            plan("cpu.max", "cpus", str(validate_cpu_max(limits.cpus)))
        if limits.pids_limit is not None:
            plan("pids.max", "pids_limit", format_int_or_max(validate_pids_max(limits.pids_limit)))
        if limits.memory is not None:
            plan("memory.max", "memory", _memory_value("memory.max", limits.memory))
        if limits.memory_swap is not None:
            swap = _swap_part(path, limits.memory_swap, memory)
            plan("memory.swap.max", "memory_swap", _memory_value("memory.swap.max", swap))
        if limits.memory_high is not None:
            plan("memory.high", "memory_high", _memory_value("memory.high", limits.memory_high))
        return out + _io_writes(limits.io)

    def _check_cpuset(self, path: str, limits: ContainerLimits) -> None:
        """cpuset.cpus must lie within the parent's cpuset.cpus.effective (else EINVAL)."""
        if limits.cpuset_cpus is None:
            return
        parent = normalize(path).rpartition("/")[0]
        text = self._fs.read(parent, "cpuset.cpus.effective")
        if text is None:
            return  # _preflight names the missing cpuset.cpus
        allowed = parse_id_list(text, f"{parent}/cpuset.cpus.effective")
        if not parse_id_list(limits.cpuset_cpus, "--cpuset-cpus") <= allowed:
            why = f"CPUs within {self._fs.path(parent)}/cpuset.cpus.effective ({text.strip()})"
            raise InvalidLimit("--cpuset-cpus", limits.cpuset_cpus, why)

    def _preflight(self, path: str, plan: list[_Write]) -> None:
        """Every file to be written exists: the controller is enabled and the kernel has the
        file (memory.swap.max needs swap accounting, CONFIG_MEMCG_SWAP)."""
        for write in plan:
            if not (self._fs.path(path) / write.file).exists():
                controller = write.file.split(".", 1)[0]
                reason = f"{self._fs.path(path)}/{write.file} does not exist"
                raise LimitUnavailable(write.option, write.given, controller, reason)

    def _undo_value(self, path: str, write: _Write) -> str:
        """What ``write.file`` holds now, as a value that writes it back."""
        text = self._fs.read(path, write.file) or ""
        if write.file != "io.max":
            return text.strip() or "\n"  # an empty cpuset.cpus: "\n" writes it empty again
        device = Device.parse(write.value.split()[0])
        return parse_io_max(text).get(device, IoMax()).line(device)

    def _write(self, path: str, write: _Write) -> None:
        self._fs.write(path, write.file, write.value, nonblock=write.file == "memory.high")

    # -- inspection -----------------------------------------------------------------------

    def read_limits(self, path: str) -> dict[str, Any]:
        """The limit files as the kernel has them (sizes and counts as integers, unlimited as
        "max", io.max by MAJ:MIN); a file this cgroup lacks is left out."""
        out: dict[str, Any] = {}
        for name in LIMIT_FILES:
            text = self._fs.read(path, name)
            if text is None:
                continue
            word = text.strip()
            if name == "io.max":
                out[name] = {
                    str(dev): {k: _json(getattr(v, k)) for k in IO_MAX_KEYS}
                    for dev, v in parse_io_max(text).items()
                }
            elif name in ("cpu.max", "cpuset.cpus"):
                out[name] = word
            else:
                out[name] = word if word == "max" else int(word)
        return out

    def oom_killed(self, path: str) -> bool:
        """memory.events oom_kill > 0 (counted over the subtree); False without memory."""
        events = read_memory_events(self._fs, path)
        return events is not None and events.oom_kill > 0

    # -- kill / remove --------------------------------------------------------------------

    def kill(self, path: str) -> None:
        """SIGKILL every process in the subtree: cgroup.kill, or each pid (older kernels)."""
        _not_root(path)
        try:
            if self._kill_file(path):
                self._fs.kill(path)
            else:
                signal_all(self._fs, path)
        except CgroupGone:
            pass

    def _kill_file(self, path: str) -> bool:
        if self._use_kill_file is not None:
            return self._use_kill_file
        return (self._fs.path(path) / "cgroup.kill").exists()

    def remove(self, path: str, timeout: float = 10.0) -> None:
        """Kill, wait for cgroup.events ``populated 0``, rmdir bottom-up. Gone already is fine."""
        path = _not_root(path)
        if not self._fs.exists(path):
            return
        deadline = time.monotonic() + timeout
        kill_file = self._kill_file(path)
        self.kill(path)
        pause = 0.001
        while _populated(self._fs, path):
            if time.monotonic() >= deadline:
                left = sorted(p for c in self._fs.walk(path) for p in self._fs.procs(c))
                raise CgroupError(
                    f"{self._fs.path(path)}: processes {left} still alive {timeout:g} s "
                    "after SIGKILL (uninterruptible sleep?); the cgroup is left in place"
                )
            if not kill_file:
                signal_all(self._fs, path)  # children forked after the last round
            time.sleep(pause)
            pause = min(pause * 2, _POLL_MAX)
        # walk() lists parents before children: reversed, every child goes before its parent.
        for cgroup in reversed(list(self._fs.walk(path))):
            _rmdir(self._fs, cgroup, deadline)


def signal_all(fs: CgroupFS, cgroup: str, sig: int = signal.SIGKILL) -> int:
    """Send ``sig`` to every process in the subtree's cgroup.procs; the number signalled."""
    _not_root(cgroup)
    sent = 0
    for member in fs.walk(cgroup):
        try:
            pids = fs.procs(member)
        except CgroupGone:
            continue
        for pid in pids:
            try:
                os.kill(pid, sig)
                sent += 1
            except ProcessLookupError:
                pass  # exited between the read and the kill
    return sent


def _not_root(cgroup: str) -> str:
    """``cgroup`` normalised; the root (every process on the host) is refused."""
    name = normalize(cgroup)
    if not name:
        raise InvalidPath("refusing to kill or remove the root cgroup (every process on the host)")
    return name


def _populated(fs: CgroupFS, cgroup: str) -> bool:
    try:
        events = read_cgroup_events(fs, cgroup)
    except CgroupGone:
        return False
    return events is not None and events.populated


def _rmdir(fs: CgroupFS, cgroup: str, deadline: float) -> None:
    """rmdir(2), retried while EBUSY (an exiting task not yet unlinked) until ``deadline``."""
    while True:
        try:
            os.rmdir(fs.path(cgroup))
            return
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENODEV):
                return
            if e.errno != errno.EBUSY or time.monotonic() >= deadline:
                raise CgroupError(f"{fs.path(cgroup)}: cannot remove: {e.strerror}") from e
        time.sleep(_POLL_MAX)


def _memory_value(name: str, value: IntOrMax) -> str:
    return format_int_or_max(validate_memory_limit(name, value))


def _swap_part(path: str, total: IntOrMax, memory: IntOrMax | None) -> IntOrMax:
    """docker's memory+swap total -> memory.swap.max, the swap alone."""
    if total is MAX:
        return MAX
    if memory is None or memory is MAX:
        why = f"{path} has no memory limit: give --memory too"
        raise InvalidLimit("--memory-swap", total, why)
    if total < memory:
        why = f"memory plus swap, at least the memory limit ({memory})"
        raise InvalidLimit("--memory-swap", total, why)
    return total - memory


def _io_writes(io: tuple[IoLimit, ...]) -> list[_Write]:
    """One io.max line per device with only the keys given: the kernel keeps the others."""
    by_device: dict[Device, list[IoLimit]] = {}
    for limit in io:
        by_device.setdefault(limit.device, []).append(limit)
    out = []
    for device, limits in by_device.items():
        for limit in limits:
            if not device_exists(device):
                why = f"a block device this kernel has ({device} is not in /sys/dev/block)"
                raise InvalidLimit(limit.option, f"{limit.path}:{limit.rate}", why)
            if not 1 <= limit.rate <= RATE_MAX:
                raise InvalidLimit(limit.option, f"{limit.path}:{limit.rate}", "a rate >= 1")
        keys = " ".join(f"{i.kind}={i.rate}" for i in limits)
        options = ",".join(dict.fromkeys(i.option for i in limits))
        given = " ".join(f"{i.path}:{i.rate}" for i in limits)
        out.append(_Write("io.max", f"{device} {keys}", options, given))
    return out


def _json(value: IntOrMax) -> int | str:
    return "max" if value is MAX else value
