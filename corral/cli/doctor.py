"""`corral doctor [--json]`: what this host offers corral, what is missing, and the fixes.

Exit status 0 when everything corral needs is available, 1 when degraded.

``--json`` prints one object with these keys (stable; new keys may be added):

- ``kernel``: ``release``, ``machine``, ``cmdline`` (the cgroup and psi boot parameters)
- ``layout``: ``kind`` (unified|hybrid|legacy|none), ``cgroup2_mount``, ``v1_controllers``
  (v1 controller name -> mount point)
- ``mounts``: the cgroup and cgroup2 mounts: ``mountpoint``, ``fstype``, ``root``,
  ``source``, ``super_options``
- ``cgroup_root``: the cgroup2 hierarchy probed (null without one)
- ``controllers``: ``root`` and ``parent``, each ``{path, exists, available, enabled}``
  (cgroup.controllers, cgroup.subtree_control) or null; ``parent`` also has ``name``
- ``cpu_stat``: ``{path, usage}``: cpu.stat usage_usec at the root (no controller needed)
- ``psi``: ``available``, ``system`` and ``cgroup`` (resource -> readable), ``error``
- ``namespaces``: name -> ``{ok, error, with_userns}`` for the eight namespaces
- ``userns``: ``max_user_namespaces``, ``unprivileged_userns_clone``, ``apparmor_restrict``,
  ``user``, ``subuid``, ``subgid`` (lists of [first, count])
- ``privileges``: ``euid``, ``cap_eff`` (hex), ``cap_sys_admin``, ``cgroup_writable``
- ``machine``: ``ready``, ``qemu``, ``kernel``, ``vng``, ``kvm_usable``, ``kvm``, ``missing``
- ``checks``: ``[{area, name, status (ok|degraded|missing|info), detail, disables, fix}]``
- ``summary``: one line; ``degraded``: true when the exit status is 1
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import sys
import textwrap
from typing import Any

import click

from runtime.cgroupfs import InvalidPath, NotCgroup2
from runtime.doctor import DEFAULT_PARENT, Check, Facts, Report, diagnose, gather

WIDTH = 80
NBSP = "\xa0"  # textwrap breaks only at ASCII whitespace
MARKS = {"ok": "✓", "degraded": "!", "missing": "✗", "info": "·"}
SECTIONS = {
    "cgroups": "cgroups",
    "psi": "pressure stall information (PSI)",
    "namespaces": "namespaces (each tried with unshare(2) in a child)",
    "userns": "user namespace limits",
    "privileges": "privileges",
    "machine": "machine (`corral machine`: a VM with a real cgroup v2 kernel)",
}


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (keys: see docs).")
@click.option(
    "--parent",
    default=DEFAULT_PARENT,
    show_default=True,
    help="corral's parent cgroup, below the cgroup2 root.",
)
@click.option(
    "--cgroup-root",
    type=click.Path(file_okay=False),
    help="Where cgroup2 is mounted [default: found in /proc/self/mountinfo].",
)
def doctor(as_json: bool, parent: str, cgroup_root: str | None) -> None:
    """Check what this host offers corral; exit 0 when all is available, 1 when degraded."""
    try:
        facts = gather(cgroup_root, parent)
    except NotCgroup2 as e:
        raise click.BadParameter(str(e), param_hint="--cgroup-root") from None
    except InvalidPath as e:
        raise click.BadParameter(str(e), param_hint="--parent") from None
    report = diagnose(facts, corral=_corral_command())
    if as_json:
        click.echo(json.dumps(to_json(facts, report), indent=2))
    else:
        click.echo(render_text(facts, report))
    raise SystemExit(report.exit_code)


def _corral_command() -> str:
    """How to run this corral again, for the commands in the fixes: as typed, else the
    venv's console script (relative when below the working directory, which the machine
    keeps), else ``python -m corral``."""
    argv0 = sys.argv[0]
    if os.path.basename(argv0) == "corral":
        return argv0
    script = os.path.join(os.path.dirname(sys.executable), "corral")
    if not os.access(script, os.X_OK):
        return f"{sys.executable} -m corral"
    on_path = shutil.which("corral")
    if on_path and os.path.samefile(on_path, script):
        return "corral"
    relative = os.path.relpath(script)
    return script if relative.startswith("..") else relative


def to_json(facts: Facts, report: Report) -> dict[str, Any]:
    layout = dataclasses.asdict(facts.layout)
    parent = _plain(facts.parent)
    if parent is not None:
        parent["name"] = facts.parent_name
    return {
        "kernel": _plain(facts.kernel),
        "layout": layout,
        "mounts": [
            {k: getattr(m, k) for k in ("mountpoint", "fstype", "root", "source")}
            | {"super_options": list(m.super_options)}
            for m in facts.mounts
        ],
        "cgroup_root": facts.cgroup_root,
        "controllers": {"root": _plain(facts.root), "parent": parent},
        "cpu_stat": _plain(facts.cpu_stat),
        "psi": _plain(facts.psi) | {"available": facts.psi.available},
        "namespaces": {n: _plain(r) for n, r in facts.namespaces.items()},
        "userns": _plain(facts.userns),
        "privileges": {
            "euid": facts.privileges.euid,
            "cap_eff": f"{facts.privileges.cap_eff:#018x}",
            "cap_sys_admin": facts.privileges.cap_sys_admin,
            "cgroup_writable": facts.privileges.cgroup_writable,
        },
        "machine": _machine(facts),
        "checks": [dataclasses.asdict(c) for c in report.checks],
        "summary": report.summary,
        "degraded": report.degraded,
    }


def _plain(value: Any) -> Any:
    return None if value is None else dict(dataclasses.asdict(value))


def _machine(facts: Facts) -> dict[str, Any]:
    m = facts.machine
    return {
        "ready": m.ready,
        "qemu": m.qemu,
        "kernel": m.kernel,
        "vng": m.vng,
        "kvm_usable": m.kvm_usable,
        "kvm": m.kvm_detail,
        "missing": m.missing,
    }


def render_text(facts: Facts, report: Report) -> str:
    k = facts.kernel
    lines = [f"corral doctor: Linux {k.release} ({k.machine})"]
    if k.cmdline:
        lines += _wrap("boot parameters: " + " ".join(k.cmdline), 0, 2)
    for area, title in SECTIONS.items():
        checks = [c for c in report.checks if c.area == area]
        if area == "namespaces":
            checks = _fold_namespaces(checks, facts)
        lines += ["", title]
        for check in checks:
            lines += _render_check(check)
    verdict = "degraded (exit status 1)" if report.degraded else "all available (exit status 0)"
    lines += ["", *_wrap(f"summary: {report.summary}", 0, 2), f"verdict: {verdict}"]
    return "\n".join(lines)


def _fold_namespaces(checks: list[Check], facts: Facts) -> list[Check]:
    """The working namespaces on one line (those that needed a user namespace on another);
    each failing one on its own, with its fix."""
    ok = [c.name for c in checks if c.status == "ok"]
    direct = [n for n in ok if not facts.namespaces[n].with_userns]
    nested = [n for n in ok if facts.namespaces[n].with_userns]
    out = []
    if direct:
        name = "all eight" if len(direct) == 8 else "working"
        out.append(Check("namespaces", name, "ok", " ".join(direct)))
    if nested:
        detail = " ".join(nested) + " (each only inside a new user namespace: unprivileged)"
        out.append(Check("namespaces", "via userns", "ok", detail))
    return out + [c for c in checks if c.status != "ok"]


def _render_check(check: Check) -> list[str]:
    head = f"  {MARKS[check.status]} {check.name:<15} "
    lines = _wrap(head + check.detail, 0, len(head))
    if check.disables:
        lines += _wrap("      disables: " + "; ".join(check.disables), 0, 16)
    if check.fix:
        lines += _wrap("      fix: " + check.fix, 0, 11)
    return lines


def _wrap(text: str, indent: int, hanging: int) -> list[str]:
    """Wrap at 80 columns, not inside a `command` that fits on a line (its spaces are
    held as NBSP while wrapping)."""
    room = WIDTH - hanging

    def hold(m: re.Match[str]) -> str:
        span = m.group(0)
        return span.replace(" ", NBSP) if len(span) <= room else span

    held = re.sub(r"`[^`]*`", hold, text)
    lines = textwrap.wrap(
        held,
        WIDTH,
        initial_indent=" " * indent,
        subsequent_indent=" " * hanging,
        break_on_hyphens=False,
        break_long_words=False,
    )
    return [line.replace(NBSP, " ") for line in lines]
