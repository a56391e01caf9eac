"""Run one OCI bundle under runc, crun or corral the same way, and read back what it did.

Every runtime runs the bundle with its foreground verb (`runc run`, `crun run`,
`corral run --bundle --rm`): create, start, wait and delete in one command, whose exit status
is the container's. Each bundle is told where its cgroup goes (linux.cgroupsPath, absolute
from the cgroup2 root), so the harness reads limits back from the kernel's files while the
container runs. A container that must be observed alive creates ``/sync/ready`` (a host
directory bind-mounted by the bundle) and then blocks opening the fifo ``/sync/go`` with shell
builtins only (no fork: it works with pids exhausted); the harness writes to the fifo to let
it finish.

corral is plugged in through ``runtime_argv`` alone.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
from make_bundle import Config as Config  # noqa: E402
from make_bundle import busybox_bundle, load_config, save_config  # noqa: E402

T = TypeVar("T")
RUNTIMES = ("runc", "crun", "corral")
CORRAL = (sys.executable, "-m", "corral")
CGROUP2 = Path("/sys/fs/cgroup")
PARENT = "corral-test"  # conftest.py's session cgroup, controllers enabled, removed at the end
SYNC = "/sync"
HOSTNAME = "parity"
# /proc/self/ns entries (pid_for_children and time_for_children included).
NS_ENTRIES = ("cgroup", "ipc", "mnt", "net", "pid", "pid_for_children", "time",
              "time_for_children", "user", "uts")  # fmt: skip
# Mount flags that change what a process may do; atime flavours and the like are left out.
MOUNT_FLAGS = frozenset({"ro", "rw", "nosuid", "nodev", "noexec"})
# Super-block options that are part of what the bundle asked for (tmpfs size/mode, devpts).
SUPER_KEYS = frozenset({"ro", "rw", "mode", "size", "newinstance", "ptmxmode", "gid"})
RUN_TIMEOUT = 180.0
Change = Callable[[Config], None]


@dataclass(frozen=True)
class Outcome:
    runtime: str
    status: int  # the runtime command's exit status (the container's: 128+N on signal N)
    stdout: str
    stderr: str

    def lines(self, tag: str) -> list[str]:
        """The rest of every stdout line that starts with ``tag`` and a space."""
        n = len(tag) + 1
        return [line[n:] for line in self.stdout.splitlines() if line.startswith(tag + " ")]

    def describe(self) -> str:
        out, err = self.stdout[-600:], self.stderr[-600:]
        return f"{self.runtime}: exit {self.status}, stdout {out!r}, stderr {err!r}"


def runtime_argv(runtime: str, bundle: Path, container_id: str, state: Path) -> list[str]:
    """The foreground `run` verb of each runtime, with its state kept under ``state``."""
    if runtime in ("runc", "crun"):
        return [runtime, "--root", str(state / runtime), "run", "--bundle", str(bundle),
                container_id]  # fmt: skip
    if runtime == "corral":
        return [*CORRAL, "run", "--state-dir", str(state / "corral"), "--rm", "--name",
                container_id, "--bundle", str(bundle)]  # fmt: skip
    raise ValueError(f"runtime {runtime!r}: allowed {', '.join(RUNTIMES)}")


def same(what: str, found: Mapping[str, T]) -> T:
    """The one value every runtime gave; fails with the per-runtime table otherwise."""
    values = list(found.values())
    table = "\n".join(f"  {rt}: {value!r}" for rt, value in found.items())
    assert all(v == values[0] for v in values), f"{what} differs:\n{table}"
    return values[0]


@dataclass
class Held:
    """A container started by ``runtime`` that waits on /sync/go (see the module docstring)."""

    runtime: str
    proc: subprocess.Popen[str]
    cgroup: str
    sync: Path

    def read(self, *names: str) -> dict[str, str]:
        return read_cgroup_files(self.cgroup, names)

    def release(self) -> Outcome:
        """Open the fifo for writing (its builtin `read` returns), then wait for the exit."""
        fd = os.open(self.sync / "go", os.O_WRONLY)
        try:
            os.write(fd, b"go\n")
        finally:
            os.close(fd)
        return finish(self.runtime, self.proc)


@dataclass
class Bundles:
    """A busybox `runc spec` bundle made once; each run gets its own config.json over the
    same read-only rootfs, with hostname HOSTNAME, a /sync bind mount and a cgroupsPath."""

    base: Path
    template: Config

    @classmethod
    def make(cls, base: Path) -> Bundles:
        return cls(base, load_config(busybox_bundle(base / "template", ("true",), CORRAL)))

    def sync(self, name: str) -> Path:
        return self.base / "sync" / name

    def bundle(self, name: str, runtime: str, args: Sequence[str], change: Change | None) -> Path:
        """BASE/NAME-RUNTIME with ``args``, its cgroup at /PARENT/oci-NAME-RUNTIME unless
        ``change`` (applied last) says otherwise."""
        path = self.base / f"{name}-{runtime}"
        path.mkdir()
        sync = self.sync(f"{name}-{runtime}")
        sync.mkdir(parents=True)
        config = copy.deepcopy(self.template)
        config["root"]["path"] = str(self.base / "template" / "rootfs")
        config["process"]["args"] = list(args)
        config["hostname"] = HOSTNAME
        config["linux"]["cgroupsPath"] = f"/{PARENT}/oci-{name}-{runtime}"
        bind = {"destination": SYNC, "type": "bind", "source": str(sync), "options": ["rbind"]}
        config["mounts"].append(bind)
        if change is not None:
            change(config)
        save_config(path, config)
        return path

    def run(self, runtime: str, name: str, args: Sequence[str], change: Change | None = None
            ) -> Outcome:  # fmt: skip
        """Run the bundle NAME-RUNTIME to completion under ``runtime``."""
        with started(runtime, self.bundle(name, runtime, args, change), self.base) as proc:
            return finish(runtime, proc)

    def run_all(self, name: str, args: Sequence[str], change: Change | None = None
                ) -> dict[str, Outcome]:  # fmt: skip
        return {rt: self.run(rt, name, args, change) for rt in RUNTIMES}

    @contextmanager
    def held(self, runtime: str, name: str, before: str, change: Change | None = None
             ) -> Iterator[Held]:  # fmt: skip
        """Start ``sh -c BEFORE`` then wait on /sync/go; yields once /sync/ready exists. On
        the way out a container still there is killed through its cgroup (cgroup.kill)."""
        script = f"{before}\necho > {SYNC}/ready\nread go < {SYNC}/go\nexit 0"
        bundle = self.bundle(name, runtime, ["sh", "-c", script], change)
        cgroup = load_config(bundle)["linux"]["cgroupsPath"]
        sync = self.sync(f"{name}-{runtime}")
        os.mkfifo(sync / "go", 0o600)
        with started(runtime, bundle, self.base) as proc:
            try:
                wait_ready(sync, proc, runtime)
                yield Held(runtime, proc, cgroup, sync)
            finally:
                kill_file = CGROUP2 / cgroup.lstrip("/") / "cgroup.kill"
                if proc.poll() is None and kill_file.exists():
                    kill_file.write_text("1")


@contextmanager
def started(runtime: str, bundle: Path, base: Path) -> Iterator[subprocess.Popen[str]]:
    cid = f"parity-{runtime}-{uuid.uuid4().hex[:10]}"
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1")
    argv = runtime_argv(runtime, bundle, cid, base / "state")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)


def finish(runtime: str, proc: subprocess.Popen[str]) -> Outcome:
    try:
        out, err = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"{runtime}: running after {RUN_TIMEOUT:g} s: {err[-600:]}") from None
    return Outcome(runtime, proc.returncode, out, err)


def wait_ready(sync: Path, proc: subprocess.Popen[str], runtime: str) -> None:
    """Wait for the container to create /sync/ready; fail with its output if it exits."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while not (sync / "ready").exists():
        if proc.poll() is not None:
            raise AssertionError(f"exited before /sync/ready: {finish(runtime, proc).describe()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{runtime}: no /sync/ready after {RUN_TIMEOUT:g} s")
        time.sleep(0.05)


def read_cgroup_files(cgroup: str, names: Sequence[str]) -> dict[str, str]:
    """Each file's content (stripped) under CGROUP2/cgroup; "<absent>" when it is missing."""
    found: dict[str, str] = {}
    for name in names:
        try:
            found[name] = (CGROUP2 / cgroup.lstrip("/") / name).read_text().strip()
        except FileNotFoundError:
            found[name] = "<absent>"
    return found


def flat_keyed(text: str) -> dict[str, int]:
    """A cgroup v2 flat-keyed file ("KEY VALUE" lines: memory.events, pids.events)."""
    return {key: int(value) for key, value in (line.split() for line in text.splitlines())}


def container_init(cgroup: str) -> int:
    """The host pid of the process that is PID 1 in its pid namespace (NSpid, proc(5))."""
    procs = read_cgroup_files(cgroup, ["cgroup.procs"])["cgroup.procs"].split()
    for pid in procs:
        with open(f"/proc/{pid}/status", encoding="utf-8") as f:
            nspid = next(line for line in f if line.startswith("NSpid:")).split()
        if nspid[-1] == "1":
            return int(pid)
    raise AssertionError(f"{cgroup}: no PID 1 among cgroup.procs {procs}")


def host_namespaces() -> dict[str, str]:
    return {name: os.readlink(f"/proc/self/ns/{name}") for name in NS_ENTRIES
            if os.path.lexists(f"/proc/self/ns/{name}")}  # fmt: skip


def new_namespaces(lines: Sequence[str], host: Mapping[str, str]) -> set[str]:
    """From "NAME LINK" lines printed inside: the namespace entries that differ from the host."""
    inside = dict(line.split(" ", 1) for line in lines)
    missing = set(host) - set(inside)
    assert not missing, f"no /proc/self/ns line inside for {sorted(missing)}: {lines}"
    return {name for name, link in host.items() if inside[name] != link}


def normalize_mountinfo(lines: Sequence[str]) -> list[tuple[str, str, str]]:
    """/proc/self/mountinfo lines (proc(5)) as (mount point, fs type, options) in mount order:
    the per-mount flags in MOUNT_FLAGS, and the super-block options in SUPER_KEYS as "sb:"."""
    mounts = []
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, super_fields = left.split(), right.split()
        point, per_mount = fields[4], fields[5].split(",")
        fstype, super_opts = super_fields[0], super_fields[2].split(",")
        flags = {o for o in per_mount if o in MOUNT_FLAGS}
        flags |= {f"sb:{o}" for o in super_opts if o.partition("=")[0] in SUPER_KEYS}
        mounts.append((point, fstype, ",".join(sorted(flags))))
    return mounts
