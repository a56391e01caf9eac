"""debootstrap's progress, read from what it prints on stdout.

Without ``--debian-installer`` (an internal interface of the installer), debootstrap prints
one ``I:`` line per step and per package (functions: info, download_debs, extract,
dpkg_progress), ``W:`` for warnings and ``E:`` for the error it dies with; the full log goes
to TARGET/debootstrap/debootstrap.log. The steps, in order (tests/fixtures/debootstrap/):

    I: Retrieving InRelease / Packages, Checking Release signature, Resolving ...  (prepare)
    I: Retrieving NAME VERSION, I: Validating NAME VERSION           one per .deb (download)
    I: Extracting NAME...                       the "required" set, by dpkg-deb (extract)
    I: Unpacking required packages... / the base system..., I: Unpacking NAME... (unpack)
    I: Configuring required packages... / the base system..., I: Configuring NAME...
    I: Base system installed successfully.                                          (done)

Unpacking and configuring run twice, for the required set and then for the base set (the
included packages); every package downloaded is unpacked and configured once, so the number
downloaded is their total. The download total is printed nowhere, so it stays unknown; the
extract total is the size of the required set, which debootstrap writes to
TARGET/debootstrap/required before it extracts (set ``required`` from it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["info", "warning", "error", "other"]
Phase = Literal["prepare", "download", "extract", "unpack", "configure", "done"]

_PACKAGE_STEP = re.compile(r"(Extracting|Unpacking|Configuring) ([^ ]+)\.\.\.")
_STAGE = re.compile(r"(Unpacking|Configuring) (required packages|the base system)\.\.\.")
_FETCH = re.compile(r"(Retrieving|Validating) ([^ ]+) ?(.*)")
_STEP_PHASE: dict[str, Phase] = {
    "Extracting": "extract",
    "Unpacking": "unpack",
    "Configuring": "configure",
}


@dataclass(frozen=True)
class Event:
    """One line of debootstrap's output, placed in its phase."""

    kind: Kind
    phase: Phase
    done: int  # packages finished in this phase so far
    total: int | None  # packages this phase will handle, None while unknown
    package: str | None  # the package this line is about
    text: str  # the line without its "I: "/"W: "/"E: " prefix


@dataclass
class DebootstrapProgress:
    """Feed debootstrap's stdout line by line; each line comes back as an Event."""

    required: int | None = None  # size of the required set, when known
    phase: Phase = "prepare"
    seen: dict[Phase, list[str]] = field(default_factory=dict)

    def feed(self, line: str) -> Event:
        line = line.rstrip("\n")
        prefix, sep, text = line.partition(": ")
        if not sep or prefix not in ("I", "W", "E"):
            return self._event("other", None, line)
        if prefix != "I":
            return self._event("warning" if prefix == "W" else "error", None, text)
        return self._info(text)

    def _info(self, text: str) -> Event:
        package = None
        step = _PACKAGE_STEP.fullmatch(text)
        stage = _STAGE.fullmatch(text)
        fetch = _FETCH.fullmatch(text)
        if stage:
            self.phase = _STEP_PHASE[stage.group(1)]
        elif step:
            self.phase = _STEP_PHASE[step.group(1)]
            package = step.group(2).split(":")[0]  # dpkg names a package "libc6:amd64"
        elif fetch and fetch.group(3).strip():  # a .deb: index files have no version
            self.phase = "download"
            package = fetch.group(2)
        elif text == "Base system installed successfully.":
            self.phase = "done"
        if package is not None:
            names = self.seen.setdefault(self.phase, [])
            if package not in names:  # retries and triggers repeat a name
                names.append(package)
        return self._event("info", package, text)

    @property
    def downloaded(self) -> int:
        return len(self.seen.get("download", []))

    def total(self, phase: Phase) -> int | None:
        if phase == "extract":
            return self.required
        if phase in ("unpack", "configure"):
            return self.downloaded or None
        return None

    def _event(self, kind: Kind, package: str | None, text: str) -> Event:
        done = len(self.seen.get(self.phase, []))
        return Event(kind, self.phase, done, self.total(self.phase), package, text)
