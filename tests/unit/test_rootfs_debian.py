"""`corral rootfs debian`: the progress parser against captured debootstrap output
(tests/fixtures/debootstrap/, see capture.sh there), argument checks, the mirror apt uses,
the progress display, and a real debootstrap that fails (an unreachable mirror) leaving
nothing behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from corral.cli import main
from corral.cli.rootfs import ProgressView
from runtime.rootfs import InvalidArgument, RootfsError, mounts_under
from runtime.rootfs.debian import (
    DEFAULT_MIRROR,
    check_mirror,
    check_suite,
    default_mirror,
    installed_packages,
    make_spec,
    parse_include,
)
from runtime.rootfs.progress import DebootstrapProgress, Event

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "debootstrap"


def events_of(name: str, required: int | None = None) -> list[Event]:
    parser = DebootstrapProgress(required=required)
    return [parser.feed(line) for line in (FIXTURES / name).read_text().splitlines()]


def phases(events: list[Event]) -> list[str]:
    out: list[str] = []
    for e in events:
        if not out or out[-1] != e.phase:
            out.append(e.phase)
    return out


def last_of(events: list[Event], phase: str) -> Event:
    return [e for e in events if e.phase == phase][-1]


def test_minbase_run_goes_through_every_phase_with_counts() -> None:
    events = events_of("bookworm-minbase.out", required=88)
    assert {e.kind for e in events} == {"info"}
    # minbase's base set is empty: "Unpacking the base system..." and nothing after it
    assert phases(events) == [
        "prepare", "download", "extract", "unpack", "configure", "unpack", "done"
    ]  # fmt: skip
    downloads = [e for e in events if e.phase == "download" and e.package]
    assert downloads[-1] == Event(
        "info", "download", 88, None, "zlib1g", "Validating zlib1g 1:1.2.13.dfsg-1"
    )
    assert downloads[0].text == "Retrieving adduser 3.134"
    for phase in ("extract", "unpack", "configure"):
        final = last_of(events, phase)
        assert (final.done, final.total) == (88, 88), phase
    assert all(e.done <= (e.total or e.done) for e in events)
    assert [e.text for e in events if e.phase == "prepare"][1] == "Retrieving InRelease "
    # dpkg names a package with its architecture; the counter does not
    assert "libc6" in {e.package for e in events if e.phase == "unpack"}
    assert events[-1].phase == "done" and events[-1].text == "Base system installed successfully."


def test_included_packages_are_the_base_stage() -> None:
    events = events_of("bookworm-minbase-include.out")
    assert phases(events)[-5:] == ["unpack", "configure", "unpack", "configure", "done"]
    base = [e for e in events if e.phase in ("unpack", "configure") and e.done > 88]
    assert [(e.phase, e.package, e.done, e.total) for e in base] == [
        ("unpack", "less", 89, 90),
        ("unpack", "netbase", 90, 90),
        ("configure", "less", 89, 90),
        ("configure", "netbase", 90, 90),
    ]
    assert last_of(events, "extract").total is None  # required unknown: no bar, a count
    retrieved = {e.package for e in events if e.phase == "download" and e.package}
    for phase in ("unpack", "configure"):  # every download unpacked and configured once
        assert {e.package for e in events if e.phase == phase and e.package} == retrieved


@pytest.mark.parametrize(
    "name, error",
    [
        ("bookworm-missing-package.out", "Couldn't find these debs: corral-no-such-package"),
        (
            "bookworm-unreachable-mirror.out",
            "Failed getting release file http://127.0.0.1:9/debian/dists/bookworm/Release",
        ),
    ],
)
def test_failures_end_in_an_error_event(name: str, error: str) -> None:
    events = events_of(name)
    assert set(phases(events)) == {"prepare"}
    assert [(e.kind, e.text) for e in events if e.kind != "info"] == [("error", error)]


def test_warnings_and_other_lines() -> None:
    parser = DebootstrapProgress()
    warning = parser.feed("W: Cannot check Release signature; keyring file not available\n")
    assert (warning.kind, warning.text) == (
        "warning",
        "Cannot check Release signature; keyring file not available",
    )
    assert parser.feed("gpgv: Good signature").kind == "other"
    assert parser.feed("X: something").kind == "other"


def test_suite_must_be_one_of_debootstraps_debian_scripts(tmp_path: Path) -> None:
    assert check_suite("bookworm") == "bookworm"
    assert check_suite("stable") == "stable"
    for bad in ["bookwrom", "jammy", "../scripts/sid", "Bookworm", ""]:
        with pytest.raises(
            InvalidArgument,
            match=r"not a Debian suite debootstrap knows; one of .*bookworm, bullseye",
        ):
            check_suite(bad)
    with pytest.raises(RootfsError, match="apt-get install debootstrap"):
        check_suite("bookworm", scripts=str(tmp_path / "absent"))


def test_package_names_follow_debian_policy() -> None:
    assert parse_include(["nginx,curl", "less", "curl"]) == ("nginx", "curl", "less")
    assert parse_include(["libstdc++6,g++,python3.11"]) == ("libstdc++6", "g++", "python3.11")
    for bad, name in [("Nginx", "Nginx"), ("a", "a"), ("nginx,", ""), ("foo_bar", "foo_bar"),
                      ("-rf", "-rf"), ("nginx=1.22", "nginx=1.22")]:  # fmt: skip
        with pytest.raises(InvalidArgument, match=f"--include {bad!r}: {name!r} is not a Debian"):
            parse_include([bad])


def test_mirror_urls() -> None:
    for good in ["http://deb.debian.org/debian", "https://m.example/debian/", "file:///srv/debian"]:
        assert check_mirror(good) == good
    for bad in ["ftp://m/debian", "deb.debian.org/debian", "http://", "file://host/x", "-rf",
                "http://m/deb ian"]:  # fmt: skip
        with pytest.raises(InvalidArgument, match="expected an http://, https:// or file:///"):
            check_mirror(bad)
    with pytest.raises(InvalidArgument, match="--variant 'standard': expected one of minbase"):
        make_spec("bookworm", variant="standard")


DEB822 = """\
Types: deb
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm

Types: deb
URIs: http://off.example/debian
Suites: bookworm
Enabled: no

# the release itself
Types: deb
URIs: cdrom:/media http://mirror.example/debian
Suites: bookworm bookworm-updates
"""


def test_default_mirror_is_the_first_archive_apt_reads_the_release_from(tmp_path: Path) -> None:
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    assert default_mirror(str(apt)) == DEFAULT_MIRROR
    (apt / "sources.list.d/debian.sources").write_text(DEB822)
    assert default_mirror(str(apt)) == "http://mirror.example/debian"
    (apt / "sources.list").write_text(
        "# deb http://commented.example/debian bookworm main\n"
        "deb http://updates.example/debian bookworm/updates main\n"
        "deb [arch=amd64 signed-by=/k.gpg] https://one-line.example/debian/ bookworm main\n"
    )
    assert default_mirror(str(apt)) == "https://one-line.example/debian/"


def test_this_hosts_mirror_comes_from_its_apt_sources() -> None:
    mirror = default_mirror()
    texts = [
        p.read_text() for p in Path("/etc/apt").rglob("*") if p.is_file() and "sources" in p.name
    ]
    assert mirror == DEFAULT_MIRROR or any(mirror in t for t in texts)


def test_installed_packages_reads_dpkg_status(tmp_path: Path) -> None:
    status = tmp_path / "var/lib/dpkg/status"
    status.parent.mkdir(parents=True)
    status.write_text(
        "Package: base-files\nStatus: install ok installed\nVersion: 12.4\n\n"
        "Package: less\nStatus: deinstall ok config-files\n\n"
        "Package: netbase\nStatus: install ok installed\n"
    )
    assert installed_packages(tmp_path) == ["base-files", "netbase"]


def test_progress_view_prints_a_line_per_phase_without_a_tty(
    capsys: pytest.CaptureFixture[str],
) -> None:
    ticks = iter(range(1000))
    view = ProgressView(tty=False, clock=lambda: float(next(ticks)))
    for event in events_of("bookworm-minbase-include.out", required=88):
        view(event)
    view.close()
    lines = capsys.readouterr().err.splitlines()
    assert [line.split()[0] for line in lines] == [
        "prepare", "download", "extract", "unpack", "configure", "unpack", "configure"
    ]  # fmt: skip
    assert lines[1].startswith("  download  90 packages, ") and lines[1].endswith(" s")
    assert lines[2].startswith("  extract   88/88 packages, ")
    assert lines[3].startswith("  unpack    88/90 packages, ")
    assert lines[6].startswith("  configure 90/90 packages, ")


def test_progress_view_redraws_a_bar_on_a_tty(capsys: pytest.CaptureFixture[str]) -> None:
    view = ProgressView(tty=True, clock=lambda: 0.0)
    for event in events_of("bookworm-minbase.out", required=88)[:250]:  # stop midway
        view(event)
    view.close(stopped=True)
    err = capsys.readouterr().err
    assert "\r\x1b[K  download  40 packages libgcrypt20\r" in err
    assert "\r\x1b[K  download  88 packages, 0.0 s\n" in err  # the bar replaced
    assert "\r\x1b[K  extract   [############------------]  44/88 libhogweed6\r" in err
    assert err.endswith("\r\x1b[K  extract   64/88 packages, 0.0 s (stopped)\n")
    assert ProgressView.render(Event("info", "unpack", 95, 90, "x", "")).count("#") == 24


def test_cli_usage_errors_exit_2_and_make_nothing(tmp_path: Path) -> None:
    runner = CliRunner()
    target = str(tmp_path / "rootfs")
    bad = runner.invoke(main, ["rootfs", "debian", target, "--suite", "bookwrom"])
    assert bad.exit_code == 2 and bad.stderr.startswith("corral rootfs: --suite 'bookwrom': ")
    bad = runner.invoke(main, ["rootfs", "debian", target, "--include", "nginx,Curl"])
    assert bad.exit_code == 2 and "'Curl' is not a Debian package name" in bad.stderr
    bad = runner.invoke(main, ["rootfs", "debian", target, "--mirror", "deb.debian.org"])
    assert bad.exit_code == 2 and bad.stderr.startswith("corral rootfs: --mirror ")
    assert runner.invoke(main, ["rootfs", "debian", target, "--variant", "x"]).exit_code == 2
    (tmp_path / "rootfs").mkdir()
    (tmp_path / "rootfs/file").write_text("")
    bad = runner.invoke(main, ["rootfs", "debian", target])
    assert bad.exit_code == 2 and "exists and is not empty (use --force" in bad.stderr
    assert sorted(os.listdir(tmp_path)) == ["rootfs"]


def test_missing_debootstrap_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without debootstrap on it
    result = CliRunner().invoke(main, ["rootfs", "debian", str(tmp_path / "rootfs")])
    assert result.exit_code == 1
    assert result.stderr == (
        "corral rootfs: debootstrap not found; "
        "install it with `apt-get install debootstrap` (or `make setup`)\n"
    )
    assert os.listdir(tmp_path) == []


def test_a_failing_debootstrap_leaves_nothing(tmp_path: Path) -> None:
    """A real debootstrap against a closed local port: it fails in its first step."""
    mirror = "http://127.0.0.1:9/debian"
    result = CliRunner().invoke(main, ["rootfs", "debian", str(tmp_path / "r"), "--mirror", mirror])
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines()[1:3] == [
        "corral rootfs: debootstrap failed (exit status 1): "
        f"Failed getting release file {mirror}/dists/bookworm/Release",
        "end of debootstrap.log:",
    ]
    assert "  prepare   " in result.stderr and "(stopped)" in result.stderr
    assert os.listdir(tmp_path) == [] and mounts_under(tmp_path) == []
