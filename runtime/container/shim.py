"""The container shim (runc init's parent plus conmon): one small, long-lived process per
container, started by runtime.container.launch as ``python -I -S shim.py STATE_DIR SYNC_FD
FLAGS`` before the container exists; its stdin then brings
``ID\\0CGROUP\\0CGROUP_DIR\\0LOG\\0CONFIG`` (CONFIG: the container's ProcessConfig as
JSON), or EOF when the CLI failed first.

It detaches from the CLI (setsid and a second fork, so the CLI or agent never has to reap it
and the container survives it), becomes a child subreaper (prctl PR_SET_CHILD_SUBREAPER) and
forks a starter (runtime.container.starter) at once, which imports the container setup
while the CLI prepares the container, then forks the setup process
(runtime.container.process) that creates the namespaces and forks the container's PID 1; the
shim adopts PID 1 when the setup process exits, and the starter tells PID 1 to go on, learns
from the close-on-exec report pipe whether execve succeeded, records "running" and exits
with the answer. The shim then owns the container's stdout and stderr pipes: every line
goes to the JSON-lines log (docker's json-file format) and, for a foreground run, to the
CLI's own stdout and stderr; it reaps, records the exit status, finish time and OOM kill,
removes the container for ``--rm``, and tells the CLI over SYNC_FD: "started PID",
"error CODE MESSAGE", "exit CODE". An OCI container (runtime.oci.lifecycle) stops before
execve: the starter records it with its pid and answers "created PID", which the shim
passes on; `corral oci start` later releases PID 1 through the exec fifo.

Peak RSS matters (issue 4 measures it against 12 MB; 9.3 MB measured): the shim imports only
builtins, codecs, os, select and runtime.syscalls. The container setup and the state and
cgroup work run in short-lived forked children: the starter (runtime.container.starter),
and one child when the container has exited, which records the exit or removes the
container with runtime.container.record (os, fcntl, json: no new interpreter, no big
imports) and falls back to runtime.container.lifecycle's helpers for bridge networking or a
cgroup that needs killing.
"""

from __future__ import annotations

import codecs
import os
import select
import sys
import time

if __name__ == "__main__":  # `python -I -S`: no script directory or site-packages on sys.path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from _json import encode_basestring

from runtime import syscalls

# The interpreter loads _signal at startup; the signal module would add enum (~1 MB RSS).
# Nor is typing imported: with re, enum and collections it costs 9 ms of the start and RSS.
_signal = sys.modules["_signal"]
SIGCHLD = 17
SIGKILL = 9
EXIT_FAILED = 125
MAX_LINE = 16 * 1024  # characters per log entry (runtime.container.logs.MAX_LINE, docker's)
STREAMS = ("stdout", "stderr")
DRAIN_SECONDS = 5.0  # output still arriving after PID 1 exited (its namespace is dying)


class StartFailed(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def rfc3339_now() -> str:
    """UTC with nanoseconds, as docker's log "time" field."""
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z"


class JsonLog:
    """runtime.container.logs.LogWriter's format and line splitting (docker's json-file:
    {"log", "stream", "time"} per line, lines cut at MAX_LINE characters, UTF-8 decoded per
    stream with U+FFFD for invalid bytes) without its imports (json, re, dataclasses: 2.5 MB
    of RSS in this long-lived process)."""

    def __init__(self, path: str) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        self.fd = os.open(path, flags, 0o640)
        self.pending = {stream: "" for stream in STREAMS}
        self.decoders = {s: codecs.getincrementaldecoder("utf-8")("replace") for s in STREAMS}

    def write(self, stream: str, data: bytes) -> None:
        """A chunk of ``stream``: every completed line (or MAX_LINE characters) is written."""
        text = self.pending[stream] + self.decoders[stream].decode(data)
        start, entries = 0, []
        while True:
            end = text.find("\n", start, start + MAX_LINE)
            if end >= 0:
                entries.append(text[start : end + 1])
                start = end + 1
            elif len(text) - start >= MAX_LINE:
                entries.append(text[start : start + MAX_LINE])
                start += MAX_LINE
            else:
                break
        self.pending[stream] = text[start:]
        self.emit(stream, entries)

    def flush(self) -> None:
        """The streams ended: what is left of their last lines."""
        for stream in STREAMS:
            text = self.pending[stream] + self.decoders[stream].decode(b"", final=True)
            self.pending[stream] = ""
            self.emit(stream, [text] if text else [])

    def emit(self, stream: str, entries: list[str]) -> None:
        now = rfc3339_now()
        for text in entries:  # one write(2) per entry: readers never see half of one
            line = f'{{"log":{encode_basestring(text)},"stream":"{stream}","time":"{now}"}}\n'
            view = memoryview(line.encode())
            while view:
                view = view[os.write(self.fd, view) :]


def tell(fd: int, line: str) -> bool:
    """A line to the CLI; False when it is gone (EPIPE) or was never there."""
    if fd < 0:
        return False
    try:
        os.write(fd, (line.replace("\n", " ") + "\n").encode())
        return True
    except OSError:
        return False


def reset_signals() -> None:
    """In a forked child: no wakeup fd and SIGCHLD back to its default (the setup process
    and --init's PID 1 must not inherit the shim's handler)."""
    _signal.set_wakeup_fd(-1)
    _signal.signal(SIGCHLD, _signal.SIG_DFL)


def helper(name: str, *args: object) -> bool:
    """runtime.container.lifecycle.NAME(*args) in a forked child, so that its imports never
    weigh on the shim's RSS; True when it succeeded (its errors go to the shim's stderr)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            reset_signals()
            from runtime.container import lifecycle

            getattr(lifecycle, name)(*args)
            code = 0
        except BaseException as e:
            os.write(2, f"corral shim: {name}: {e}\n".encode())
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def finish(state_dir: str, cid: str, cgroup: str, cgroup_dir: str, code: int, rm: bool) -> bool:
    """After PID 1's exit, in a forked child: the exit recorded (or, for ``rm``, the
    container removed) by runtime.container.record with os, fcntl and json alone (json
    only to record: --rm imports nothing more than the shim has); the full
    lifecycle.record_exit or remove_container (their imports cost tens of milliseconds)
    only when the lean records cannot do it alone. True when it succeeded."""
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            reset_signals()
            from runtime.container import record

            if not record.finish_exit(state_dir, cid, cgroup_dir, code, rm):
                from runtime.container import lifecycle

                if rm:
                    lifecycle.remove_container(state_dir, cid, cgroup)
                else:
                    lifecycle.record_exit(state_dir, cid, cgroup, code)
            status = 0
        except BaseException as e:
            name = "remove_container" if rm else "record_exit"
            os.write(2, f"corral shim: {name}: {e}\n".encode())
        finally:
            os._exit(status)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def exit_code(status: int) -> int:
    """waitpid status -> docker's exit code (128+N for a death by signal N)."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def read_line(fd: int) -> str:
    """One line from a pipe whose writer sends whole lines ("" at EOF)."""
    buf = b""
    while not buf.endswith(b"\n"):
        data = os.read(fd, 4096)
        if not data:
            break
        buf += data
    return buf.decode(errors="replace").rstrip("\n")


def close_except(*keep: int) -> None:
    """close_range(2) around the fds to keep: nothing of the shim's leaks into a child."""
    low = 3
    for fd in [*sorted(keep), 1 << 32]:
        if fd > low:
            syscalls.close_range(low, fd - 1)
        low = fd + 1


class Starter:
    """The starter child (runtime.container.starter), forked as soon as the shim has
    detached: it imports the container setup while the CLI still prepares the container,
    then reads ``ID\\0CONFIG`` from ``config`` (EOF without it: no container, it exits),
    forks the setup process, waits for the execve, records "running" and answers on
    ``answer``. stdin, stdout and stderr of the starter, and so of the container, are
    /dev/null and the output pipes."""

    def __init__(self, fds: dict[str, int], state_dir: str) -> None:
        answer_r, answer_w = os.pipe()
        config_r, config_w = os.pipe()
        shim = os.getpid()
        self.pid = os.fork()
        if self.pid == 0:
            try:
                reset_signals()
                for target, name in ((0, "null"), (1, "out_w"), (2, "err_w")):
                    os.dup2(fds[name], target)
                close_except(answer_w, config_r)
                from runtime.container import starter

                request = read_all(config_r)
                os.close(config_r)
                cid, found, config = request.partition(b"\0")
                if found:
                    starter.starter_main(config, answer_w, state_dir, cid.decode(), shim)
                os._exit(0)
            except BaseException as e:  # an import failed: say so instead of dying silently
                tell(answer_w, f"error {EXIT_FAILED} corral shim: starter: {e!r}")
            finally:
                os._exit(EXIT_FAILED)
        for name in ("out_w", "err_w"):
            os.close(fds[name])
        os.close(answer_w)
        os.close(config_r)
        self.answer, self.config = answer_r, config_w

    def start(self, cid: str, config: bytes) -> tuple[str, int]:
        """The container's PID 1, or StartFailed with the starter's error. The answer's word
        comes with it: "started", or "created" for an OCI container waiting on its exec
        fifo."""
        write_all(self.config, cid.encode() + b"\0" + config)
        os.close(self.config)
        line = read_line(self.answer)
        os.close(self.answer)
        status = os.waitpid(self.pid, 0)[1]
        word, _, rest = line.partition(" ")
        if word in ("started", "created"):
            return word, int(rest)
        if word == "error":
            code, _, message = rest.partition(" ")
            raise StartFailed(int(code) if code.isdigit() else EXIT_FAILED, message)
        raise StartFailed(EXIT_FAILED, f"the starter process died (status {exit_code(status)})")

    def cancel(self) -> None:
        """No container: EOF to the starter, which exits."""
        os.close(self.config)
        os.close(self.answer)
        os.waitpid(self.pid, 0)


def read_all(fd: int) -> bytes:
    return b"".join(iter(lambda: os.read(fd, 65536), b""))


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def make_fds() -> dict[str, int]:
    fds = {"null": os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)}
    for read, write in (("out_r", "out_w"), ("err_r", "err_w")):
        fds[read], fds[write] = os.pipe()
    return fds


def reap(container: int) -> int | None:
    """Reap every exited child (adopted orphans too); the container's status if it exited."""
    found = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return found
        if pid == 0:
            return found
        if pid == container:
            found = status


def supervise(pid: int, fds: dict[str, int], log: JsonLog, attach: bool) -> int:
    """Copy the container's output to the log (and the CLI) until PID 1 exited and the
    output pipes reached EOF; the wait status of PID 1."""
    streams = {fds["out_r"]: ("stdout", 1), fds["err_r"]: ("stderr", 2)}
    attached = {1, 2} if attach else set()
    status = reap(pid)
    deadline = time.monotonic() + DRAIN_SECONDS
    while streams:
        timeout = None if status is None else max(0.0, deadline - time.monotonic())
        ready = select.select([*streams, fds["wake_r"]], [], [], timeout)[0]
        if not ready:
            break  # PID 1 exited DRAIN_SECONDS ago and something still holds a pipe
        for fd in ready:
            if fd == fds["wake_r"]:
                os.read(fd, 512)
                if status is None and (status := reap(pid)) is not None:
                    deadline = time.monotonic() + DRAIN_SECONDS
                continue
            data = os.read(fd, 65536)
            stream, target = streams[fd]
            if not data:
                del streams[fd]
                continue
            log.write(stream, data)
            if target in attached:
                try:
                    os.write(target, data)
                except OSError:
                    attached.discard(target)  # the CLI went away: keep logging
    log.flush()
    return status if status is not None else os.waitpid(pid, 0)[1]


def detach() -> None:
    """setsid and fork again: the CLI reaps the first process, init or a subreaper the shim."""
    if os.getsid(0) != os.getpid():
        os.setsid()
    if os.fork() != 0:
        os._exit(0)
    syscalls.prctl(syscalls.PR_SET_CHILD_SUBREAPER, 1)


def read_request() -> tuple[str, str, str, str, bytes] | None:
    """``ID\\0CGROUP\\0CGROUP_DIR\\0LOG\\0CONFIG`` from stdin (runtime.container.launch);
    None when the CLI closed it without (it failed before the container existed)."""
    fields = read_all(0).split(b"\0", 4)
    if len(fields) != 5:
        return None
    cid, cgroup, cgroup_dir, log_path = (f.decode() for f in fields[:4])
    return cid, cgroup, cgroup_dir, log_path, fields[4]


def main(argv: list[str]) -> int:
    state_dir, sync_text, flags = argv
    sync, options = int(sync_text), set(flags.split(","))
    detach()
    fds = make_fds()
    starter = Starter(fds, state_dir)
    request = read_request()
    os.dup2(fds["null"], 0)
    if request is None:
        starter.cancel()
        return 0
    cid, cgroup, cgroup_dir, log_path, config = request
    fds["wake_r"], fds["wake_w"] = os.pipe()
    os.set_blocking(fds["wake_w"], False)
    _signal.set_wakeup_fd(fds["wake_w"])
    _signal.signal(SIGCHLD, lambda _sig, _frame: None)  # wakes select through the fd
    log = JsonLog(log_path)
    try:
        word, pid = starter.start(cid, config)
    except StartFailed as e:
        if not tell(sync, f"error {e.code} {e}"):
            helper("record_failure", state_dir, cid, e.code, str(e))
        return e.code
    tell(sync, f"{word} {pid}")
    if "attach" not in options:
        os.close(sync)
        sync = -1
    code = exit_code(supervise(pid, fds, log, "attach" in options))
    finish(state_dir, cid, cgroup, cgroup_dir, code, "rm" in options)  # --rm: the state goes
    tell(sync, f"exit {code}")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
