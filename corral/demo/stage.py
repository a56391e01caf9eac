"""The demo's stage on a cgroup v2 kernel: the agent and the containers, and their teardown.

Everything goes through the `corral` command as a user would type it (`corral rootfs
busybox`, `corral serve`, `corral run -d`, `corral rm -f`), each a child process forked from
this one (corral.demo.forked says why); only corral/, the containers' parent, is made here
first (as an administrator makes a slice). Teardown always runs, in reverse: containers
removed (cgroup.kill, cgroup and state gone), the agent stopped (SIGTERM, then SIGKILL after
AGENT_STOP_SECONDS), demo-leak's pool cgroup removed, the scratch disk unmounted; the
session then deletes the work directory.

Data that must be real page cache or reach a block device (/data of the cache grower, the
leak and the io writer) lives on the machine's scratch disk ($CORRAL_MACHINE_DISK, made ext4
here) when there is one; otherwise under the work directory (no io rule then: a host's own
disk is not the demo's to throttle).
"""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from corral.demo.forked import Child, preload
from corral.demo.workloads import NAMES, PARENT, POOL, WORKLOADS, io_rule, run_argv
from runtime.cgroupfs import CgroupError, CgroupFS

AGENT_STOP_SECONDS = 10.0
AGENT_START_SECONDS = 120.0
CONTAINER_CONTROLLERS = ("cpuset", "cpu", "io", "memory", "pids")
COMMAND_SECONDS = 120.0  # one `corral run`/`rm`/`rootfs` under TCG emulation


class DemoError(Exception):
    """The demo could not run; the message says what failed and where to look."""


def corral_command() -> str:
    """The `corral` beside this Python (the virtual environment's), else the one on PATH."""
    beside = Path(sys.executable).with_name("corral")
    if beside.exists():
        return str(beside)
    found = shutil.which("corral")
    if found is None:
        raise DemoError("no `corral` command beside this Python or on PATH")
    return found


def demo_policy(device: str | None) -> str:
    """corral/demo/policy.toml, plus the io rule for ``device`` (MAJ:MIN) when given."""
    text = importlib.resources.files("corral.demo").joinpath("policy.toml").read_text()
    return text + io_rule(device) if device else text


def machine_disk() -> str | None:
    """The machine's scratch disk: only inside `corral machine` (never a host's disk)."""
    if os.environ.get("CORRAL_IN_MACHINE") != "1":
        return None
    return os.environ.get("CORRAL_MACHINE_DISK") or None


def wait_http(url: str, alive: Callable[[], str | None], seconds: float) -> bytes:
    """Poll ``url`` until it answers 200; ``alive`` returns why waiting is pointless."""
    deadline = time.monotonic() + seconds
    last = "no answer"
    while time.monotonic() < deadline:
        dead = alive()
        if dead is not None:
            raise DemoError(dead)
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                body: bytes = resp.read()
                return body
        except OSError as e:
            last = str(e)
        time.sleep(0.5)
    raise DemoError(f"{url} did not answer within {seconds:g} s ({last})")


def wait_containers(url: str, alive: Callable[[], str | None], seconds: float) -> None:
    """Poll /api/v1/snapshot until the agent names every demo container."""
    deadline = time.monotonic() + seconds
    seen: set[str] = set()
    while time.monotonic() < deadline:
        body = wait_http(f"{url}/api/v1/snapshot", alive, deadline - time.monotonic())
        names = json.loads(body).get("names", {})
        seen = {n.get("name") for n in names.values() if n.get("kind") == "container"}
        if set(NAMES) <= seen:
            return
        time.sleep(0.5)
    missing = sorted(set(NAMES) - seen)
    raise DemoError(f"the agent at {url} never saw {', '.join(missing)} within {seconds:g} s")


def run_corral(*args: str, corral: str | None = None) -> str:
    """The output of `corral ARGS...`; DemoError with its last message when it fails."""
    argv = [corral or corral_command(), *args]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_SECONDS)
    except subprocess.TimeoutExpired:
        raise DemoError(f"`corral {args[0]}` took over {COMMAND_SECONDS:g} s") from None
    return _checked(args, done.returncode, done.stdout, done.stderr)


def _checked(args: Sequence[str], code: int, out: str, err: str) -> str:
    """``out`` of a `corral` command that exited 0; else DemoError with its last message."""
    if code != 0:
        lines = (err or out).strip().splitlines()
        raise DemoError(
            f"`corral {' '.join(args[:4])} ...` exited {code}: {lines[-1] if lines else ''}"
        )
    return out


def prepare_parents(fs: CgroupFS | None = None) -> None:
    """corral/ with the root's controllers enabled for its children, as `corral run` makes
    it, made first so that every container (demo-leak's below corral/demo-pool too) can
    start at once. Already there is fine."""
    fs = fs or CgroupFS.discover()
    wanted = sorted(fs.subtree_control("") & set(CONTAINER_CONTROLLERS))
    fs.create(PARENT, exist_ok=True)
    fs.enable_controllers(PARENT, wanted)


class Stage:
    """The agent on ``listen`` (HOST:PORT) and the demo containers, in ``work``. The
    `corral` commands run as forked children (corral.demo.forked)."""

    def __init__(
        self, work: Path, listen: str, say: Callable[[str], None], rootfs: Path | None = None
    ) -> None:
        self.work, self.listen, self.say, self.rootfs = work, listen, say, rootfs
        self.disk = machine_disk()
        self.notes: list[str] = []
        self.agent: Child | None = None
        self.started: list[str] = []
        self._mounted: Path | None = None
        self._logs = work / "logs"

    def __enter__(self) -> Stage:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _fork(self, args: Sequence[str], *, new_session: bool = False) -> Child:
        self._logs.mkdir(exist_ok=True)
        log = self._logs / f"{len(os.listdir(self._logs)):02d}-{args[0]}.log"
        return Child(args, log, new_session=new_session)

    def _corral(self, *args: str) -> str:
        """The output of `corral ARGS...` (forked); DemoError when it fails."""
        child = self._fork(args)
        try:
            code = child.wait(COMMAND_SECONDS)
        except TimeoutError:
            child.send_signal(signal.SIGKILL)
            child.wait()
            raise DemoError(f"`corral {args[0]}` took over {COMMAND_SECONDS:g} s") from None
        return _checked(args, code, child.output(), "")

    def start(self) -> None:
        """Root filesystem, data, policy, then the agent and the containers at once."""
        self.say("loading corral's modules once (each command is forked from here)")
        preload()
        rootfs = self.work / "rootfs"
        if self.rootfs is not None:
            shutil.copytree(self.rootfs, rootfs, symlinks=True)
        else:
            self.say("making a busybox root filesystem (corral rootfs busybox)")
            self._corral("rootfs", "busybox", str(rootfs))
        data, device = self._data()
        policy = self.work / "policy.toml"
        policy.write_text(demo_policy(device))
        prepare_parents()
        argv = ["serve", "--policy", str(policy), "--listen", self.listen]
        argv += ["--audit-log", str(self.work / "audit.jsonl")]
        self.say(f"starting the agent: corral {' '.join(argv)}")
        # Its own session: a Ctrl-C reaches this process, which stops the agent last.
        self.agent = self._fork(argv, new_session=True)
        children = {}
        for w in WORKLOADS:
            where = None
            if w.data:
                (data / w.name).mkdir(parents=True, exist_ok=True)
                where = str(data / w.name)
            self.say(f"starting {w.name}: {w.shows}")
            children[w.name] = self._fork(run_argv("corral", w, str(rootfs), where)[1:])
            # Removed at teardown unless its `corral run` fails (which leaves nothing): an
            # interrupted start may have made it.
            self.started.append(w.name)
        self._wait_started(children)
        host, _, port = self.listen.rpartition(":")
        local = "127.0.0.1" if host in ("0.0.0.0", "") else host
        wait_http(f"http://{local}:{port}/healthz", self.agent_dead, AGENT_START_SECONDS)

    def _wait_started(self, children: dict[str, Child]) -> None:
        failed = []
        for name, child in children.items():
            try:
                code = child.wait(COMMAND_SECONDS)
            except TimeoutError:
                child.send_signal(signal.SIGKILL)
                code = child.wait()
            try:
                _checked(("run", "-d", "--name", name), code, child.output(), "")
            except DemoError as e:
                self.started.remove(name)
                failed.append(str(e))
        if failed:
            raise DemoError("; ".join(failed))

    def _data(self) -> tuple[Path, str | None]:
        """The data directory and, on the machine's scratch disk, its MAJ:MIN."""
        if self.disk is None:
            self.notes.append(
                "no scratch disk (only inside `corral machine --disk`): demo-io-writer writes "
                f"to {self.work / 'data'} unthrottled, without an io.max rule"
            )
            return self.work / "data", None
        mount = self.work / "disk"
        mount.mkdir()
        self.say(f"making ext4 on the scratch disk {self.disk}")
        for argv in (["mkfs.ext4", "-q", "-F", self.disk], ["mount", self.disk, str(mount)]):
            done = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_SECONDS)
            if done.returncode != 0:
                raise DemoError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
        self._mounted = mount
        rdev = os.stat(self.disk).st_rdev
        device = f"{os.major(rdev)}:{os.minor(rdev)}"
        self.notes.append(f"scratch disk {self.disk} ({device}), ext4: io.max wbps=4M rule")
        return mount, device

    def agent_dead(self) -> str | None:
        """Why the agent is not running (its log's last line), or None while it runs."""
        if self.agent is None or self.agent.poll() is None:
            return None
        lines = self.agent.output().strip().splitlines()
        return f"the agent exited {self.agent.returncode}: {lines[-1] if lines else ''}"

    def stop(self) -> None:
        """Teardown; every step runs even when an earlier one failed."""
        if self.started:
            self.say(f"removing {', '.join(self.started)}")
            with contextlib.suppress(DemoError):
                self._corral("rm", "-f", *self.started)
            self.started = []
        if self.agent is not None and self.agent.poll() is None:
            self.agent.send_signal(signal.SIGTERM)
            try:
                self.agent.wait(AGENT_STOP_SECONDS)
            except TimeoutError:
                self.agent.send_signal(signal.SIGKILL)
                self.agent.wait()
        with contextlib.suppress(CgroupError, OSError):
            fs = CgroupFS.discover()
            if fs.exists(POOL):
                fs.remove(POOL, recursive=True)
        if self._mounted is not None:
            subprocess.run(["umount", str(self._mounted)], capture_output=True, check=False)
            self._mounted = None
