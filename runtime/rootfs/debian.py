"""`corral rootfs debian DIR`: a Debian root filesystem made by debootstrap.

Arguments are checked before anything runs: the suite against debootstrap's own scripts
(/usr/share/debootstrap/scripts, Debian ones link to ``sid``), package names against the
grammar of Debian Policy 5.6.1, the mirror as an http, https or file URL. debootstrap runs
in a private mount namespace (util-linux ``unshare --mount``): the /proc and /sys it mounts in
its target die with it, even when it is killed, and never show in the host's mount table.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from runtime.rootfs import (
    InvalidArgument,
    RootfsError,
    resolve_target,
    staged,
    tree_size,
    write_placeholders,
)
from runtime.rootfs.progress import DebootstrapProgress, Event

DEFAULT_MIRROR = "http://deb.debian.org/debian"
SCRIPTS = "/usr/share/debootstrap/scripts"
VARIANTS = ("minbase", "buildd", "default")  # debootstrap --variant; default is none given
INSTALL_HINT = "install it with `apt-get install debootstrap` (or `make setup`)"
# Debian Policy 5.6.1: lower case letters, digits, + - and ., at least two characters,
# starting with an alphanumeric.
_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+")
_SUITE = re.compile(r"[a-z][a-z0-9-]*")


@dataclass(frozen=True)
class DebianSpec:
    suite: str = "bookworm"
    include: tuple[str, ...] = ()
    mirror: str = DEFAULT_MIRROR
    variant: str = "minbase"


@dataclass(frozen=True)
class DebianRootfs:
    path: Path
    spec: DebianSpec
    packages: int  # installed, from var/lib/dpkg/status
    size_bytes: int
    seconds: float  # debootstrap's run time


def make_spec(
    suite: str,
    include: Iterable[str] = (),
    mirror: str | None = None,
    variant: str = "minbase",
    scripts: str = SCRIPTS,
    apt_dir: str = "/etc/apt",
) -> DebianSpec:
    """A checked DebianSpec; ``include`` items may hold comma-separated names. Without a
    mirror, the one this machine's apt uses (``default_mirror``)."""
    if variant not in VARIANTS:
        raise InvalidArgument(f"--variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    return DebianSpec(
        suite=check_suite(suite, scripts),
        include=parse_include(include),
        mirror=check_mirror(mirror) if mirror is not None else default_mirror(apt_dir),
        variant=variant,
    )


def debian_suites(scripts: str = SCRIPTS) -> list[str]:
    """The suites debootstrap builds with its Debian script (the ones that link to sid)."""
    if not os.path.isdir(scripts):
        raise RootfsError(f"{scripts} is missing: debootstrap is not installed; {INSTALL_HINT}")
    names = os.listdir(scripts)
    return sorted(n for n in names if os.path.realpath(os.path.join(scripts, n)).endswith("/sid"))


def check_suite(suite: str, scripts: str = SCRIPTS) -> str:
    known = debian_suites(scripts)
    if not _SUITE.fullmatch(suite) or suite not in known:
        raise InvalidArgument(
            f"--suite {suite!r}: not a Debian suite debootstrap knows; one of {', '.join(known)}"
        )
    return suite


def parse_include(values: Iterable[str]) -> tuple[str, ...]:
    """Package names from ``--include`` values such as "nginx,curl", in order, once each."""
    names: list[str] = []
    for value in values:
        for name in value.split(","):
            if not _PACKAGE.fullmatch(name):
                raise InvalidArgument(
                    f"--include {value!r}: {name!r} is not a Debian package name (lower case "
                    "letters, digits, '+', '-' and '.', at least two, starting alphanumeric)"
                )
            if name not in names:
                names.append(name)
    return tuple(names)


def check_mirror(url: str) -> str:
    parts = urlsplit(url)
    ok = (parts.scheme in ("http", "https") and parts.netloc) or (
        parts.scheme == "file" and parts.path.startswith("/") and not parts.netloc
    )
    if not ok or any(c.isspace() for c in url):
        raise InvalidArgument(
            f"--mirror {url!r}: expected an http://, https:// or file:/// URL of a Debian archive"
        )
    return url


def default_mirror(apt_dir: str = "/etc/apt") -> str:
    """The first archive apt reads the release itself from (not a -security or -updates
    suite), in apt's order: sources.list, then sources.list.d/*.list and *.sources by name;
    else deb.debian.org."""
    files = [os.path.join(apt_dir, "sources.list")]
    part = os.path.join(apt_dir, "sources.list.d")
    if os.path.isdir(part):
        files += [os.path.join(part, n) for n in sorted(os.listdir(part))]
    for path in files:
        if path.endswith((".list", ".sources")) and os.path.isfile(path):
            text = Path(path).read_text(errors="replace")
            deb822 = path.endswith(".sources")
            uri = mirror_from_deb822(text) if deb822 else mirror_from_one_line(text)
            if uri is not None:
                return uri
    return DEFAULT_MIRROR


def mirror_from_one_line(text: str) -> str | None:
    """sources.list(5) one-line style: ``deb [options] URI SUITE [COMPONENT...]``."""
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        if words and words[0].startswith("["):  # options: "[arch=amd64 signed-by=...]"
            while words and not words[0].endswith("]"):
                words = words[1:]
            words = words[1:]
        if len(words) >= 2 and _usable(words[0], words[1:2]):
            return words[0]
    return None


def mirror_from_deb822(text: str) -> str | None:
    """sources.list(5) deb822 style: stanzas of Types, URIs, Suites, Enabled fields."""
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled") == "no":
            continue
        for uri in fields.get("uris", "").split():
            if _usable(uri, fields.get("suites", "").split()):
                return uri
    return None


def _usable(uri: str, suites: list[str]) -> bool:
    """A release suite (bookworm, not bookworm-security or bookworm/updates) from an
    archive debootstrap can read (not cdrom:, mirror+file: or tor+http:)."""
    release = any("-" not in s and "/" not in s for s in suites)
    return release and urlsplit(uri).scheme in ("http", "https", "file")


def find_debootstrap() -> str:
    path = shutil.which("debootstrap")
    if path is None:
        raise RootfsError(f"debootstrap not found; {INSTALL_HINT}")
    return path


def build_debian(
    target: str,
    spec: DebianSpec,
    force: bool = False,
    on_event: Callable[[Event], None] | None = None,
) -> DebianRootfs:
    """Run debootstrap into a staging directory and rename it to ``target``."""
    spec = make_spec(spec.suite, spec.include, spec.mirror, spec.variant)  # checked again
    path = resolve_target(target, force)
    debootstrap = find_debootstrap()
    unshare = shutil.which("unshare")
    if unshare is None:
        raise RootfsError("util-linux's unshare not found (Debian package util-linux)")
    if os.geteuid() != 0:
        raise RootfsError("debootstrap must run as root (it chroots and makes device nodes)")
    with staged(path) as tmp:
        # debootstrap copies the host's resolv.conf and hostname only where the target has
        # none (setup_etc): empty ones keep the build host's out of the image.
        write_placeholders(tmp, ("etc/resolv.conf", "etc/hostname"))
        started = time.monotonic()
        run_debootstrap(
            [unshare, "--mount", "--propagation", "private", "--", debootstrap],
            tmp,
            spec,
            on_event or (lambda e: None),
        )
        seconds = time.monotonic() - started
        write_placeholders(tmp)
        installed = installed_packages(tmp)
        missing = [p for p in spec.include if p not in installed]
        if missing:
            raise RootfsError(f"debootstrap did not install {', '.join(missing)}")
    return DebianRootfs(path, spec, len(installed), tree_size(path), seconds)


def debootstrap_argv(prefix: list[str], root: Path, spec: DebianSpec) -> list[str]:
    argv = [*prefix]
    if spec.variant != "default":
        argv.append(f"--variant={spec.variant}")
    if spec.include:
        argv.append(f"--include={','.join(spec.include)}")
    return [*argv, spec.suite, str(root), spec.mirror]


def run_debootstrap(
    prefix: list[str], root: Path, spec: DebianSpec, on_event: Callable[[Event], None]
) -> None:
    """Run debootstrap, report each line of its stdout as an Event, raise on failure."""
    env = dict(os.environ, LC_ALL="C", DEBIAN_FRONTEND="noninteractive")
    env["PATH"] = env.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"  # chroot, ldconfig
    proc = subprocess.Popen(
        debootstrap_argv(prefix, root, spec),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        env=env,
    )
    parser = DebootstrapProgress()
    errors: list[str] = []
    tail: deque[str] = deque(maxlen=10)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            event = parser.feed(line)
            if event.phase == "extract" and parser.required is None:
                parser.required = _count_words(root / "debootstrap/required")
                event = dataclasses.replace(event, total=parser.required)
            if event.kind == "error":
                errors.append(event.text)
            tail.append(line.rstrip("\n"))
            on_event(event)
        status = proc.wait()
    except BaseException:
        _stop(proc)
        raise
    if status != 0:
        raise RootfsError(_failure(status, errors, list(tail), root))


def _stop(proc: subprocess.Popen[str]) -> None:
    """End debootstrap with SIGTERM, which it traps to run its exit handlers (the umounts);
    SIGKILL after 30 s. Its mounts go with its mount namespace either way."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _failure(status: int, errors: list[str], tail: list[str], root: Path) -> str:
    """The E: lines, else the last lines printed; with the end of debootstrap.log, which
    goes when the staging directory is removed."""
    head = f"debootstrap failed (exit status {status})"
    lines = [f"{head}: {'; '.join(errors)}" if errors else f"{head}; it printed last:"]
    if not errors:
        lines += [f"  {line}" for line in tail]
    log = root / "debootstrap" / "debootstrap.log"
    if log.is_file():
        lines.append(f"end of {log.name}:")
        lines += [f"  {line}" for line in log.read_text(errors="replace").splitlines()[-10:]]
    return "\n".join(lines)


def _count_words(path: Path) -> int | None:
    try:
        return len(path.read_text().split())
    except OSError:
        return None


def installed_packages(root: Path) -> list[str]:
    """Packages whose status is "install ok installed" in ROOT/var/lib/dpkg/status."""
    status = root / "var/lib/dpkg/status"
    names = []
    for stanza in status.read_text(errors="replace").split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+): (.*)$", stanza, re.M))
        if fields.get("Status") == "install ok installed" and "Package" in fields:
            names.append(fields["Package"])
    return names
