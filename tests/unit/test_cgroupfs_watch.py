"""runtime.cgroupfs.watch on plain directories: names of written files per watched cgroup,
re-watching a re-created directory, retain, and directories that cannot be watched. The
cgroupfs-specific behaviour (kernfs notices, no IN_IGNORED on rmdir) is checked on the real
kernel in tests/kernel/test_watch.py."""

from __future__ import annotations

from pathlib import Path

from runtime.cgroupfs.watch import ChangeWatch


def tree(tmp_path: Path) -> Path:
    for d in ("", "a", "a/b"):
        (tmp_path / "cg" / d).mkdir(exist_ok=True)
        (tmp_path / "cg" / d / "memory.high").write_text("max\n")
    return tmp_path / "cg"


def test_written_files_are_named_per_cgroup(tmp_path: Path) -> None:
    root = tree(tmp_path)
    with ChangeWatch(root) as watch:
        assert all(watch.watch(c) for c in ("", "a", "a/b"))
        assert watch.drain().files == {}
        (root / "a" / "memory.high").write_text("100\n")
        (root / "a/b" / "pids.max").write_text("5\n")
        (root / "memory.high").write_text("200\n")
        changes = watch.drain()
        assert changes.files == {"a": {"memory.high"}, "a/b": {"pids.max"}, "": {"memory.high"}}
        assert not changes.overflowed
        assert changes.of("nowhere") == set() and watch.drain().files == {}


def test_a_recreated_directory_is_watched_afresh_and_the_old_watch_dropped(
    tmp_path: Path,
) -> None:
    root = tree(tmp_path)
    with ChangeWatch(root) as watch:
        watch.watch("a/b")
        (root / "a/b/memory.high").unlink()
        (root / "a/b").rmdir()
        (root / "a/b").mkdir()
        assert watch.watch("a/b") and len(watch) == 1
        (root / "a/b/memory.high").write_text("1\n")
        assert watch.drain().files == {"a/b": {"memory.high"}}
        assert len(watch) == 1 and watch.watching("a/b")


def test_retain_unwatch_and_missing_directories(tmp_path: Path) -> None:
    root = tree(tmp_path)
    with ChangeWatch(root) as watch:
        for c in ("", "a", "a/b"):
            watch.watch(c)
        watch.retain(["", "a"])
        assert len(watch) == 2 and not watch.watching("a/b")
        (root / "a/b/memory.high").write_text("1\n")
        assert watch.drain().files == {}
        assert not watch.watch("missing") and not watch.watching("missing")
        assert not watch.watch("a/memory.high")  # not a directory
        watch.unwatch("a")
        watch.unwatch("a")  # twice is fine
        assert len(watch) == 1
    assert len(watch) == 0  # closed
