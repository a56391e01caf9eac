"""The checks of each area, made from the probes' facts. report.diagnose() puts them together."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from runtime import syscalls
from runtime.cgroupfs.mounts import Layout
from runtime.doctor import features as F
from runtime.doctor.facts import Facts
from runtime.machine.requirements import APT_PACKAGES, PIP_PACKAGE

Status = Literal["ok", "degraded", "missing", "info"]


@dataclass(frozen=True)
class Check:
    area: str  # the report section: kernel, cgroups, psi, namespaces, userns, ...
    name: str
    status: Status
    detail: str
    disables: list[str] = field(default_factory=list)  # the corral features lost
    fix: str = ""

    @property
    def problem(self) -> bool:
        return self.status in ("degraded", "missing")


def kernel_checks(facts: Facts) -> list[Check]:
    k = facts.kernel
    params = " ".join(k.cmdline) or "none"
    detail = f"Linux {k.release} ({k.machine}); cgroup and psi boot parameters: {params}"
    return [Check("kernel", "kernel", "info", detail)]


def cgroup_checks(facts: Facts, corral: str) -> list[Check]:
    checks = [_layout_check(facts.layout, facts, corral)]
    checks += [_controller_check(c, facts, corral) for c in F.NEEDED_CONTROLLERS]
    checks.append(_cpu_stat_check(facts))
    if facts.root is not None:
        root = facts.root
        detail = (
            f"{root.path}: available: {' '.join(root.available) or 'none'}; "
            f"enabled for children: {' '.join(root.enabled) or 'none'}"
        )
        checks.append(Check("cgroups", "root", "info", detail))
    if facts.parent is not None:
        checks.append(_parent_check(facts))
    return checks


def _layout_check(layout: Layout, facts: Facts, corral: str) -> Check:
    v1 = " ".join(sorted(layout.v1_controllers))
    where = os.path.commonpath(list(layout.v1_controllers.values())) if v1 else ""
    probed = ""
    if facts.cgroup_root and facts.cgroup_root != layout.cgroup2_mount:
        probed = f"; probing {facts.cgroup_root} as given"
    machine = F.machine_fix(corral)
    if layout.kind == "unified":
        detail = f"unified: cgroup2 at {layout.cgroup2_mount}, no v1 controllers mounted"
        return Check("cgroups", "layout", "ok", detail + probed)
    if layout.kind == "hybrid":
        offers = " ".join(facts.root.available) if facts.root else ""
        lost = [c for c in F.NEEDED_CONTROLLERS if layout.v1_mounts_of(c)]
        detail = (
            f"hybrid: cgroup2 at {layout.cgroup2_mount} offers {offers or 'no controllers'}; "
            f"cgroup v1 holds {v1} (under {where}){probed}"
        )
        disables = [f"the {' '.join(lost)} controllers of cgroup v2 (each below)"] if lost else []
        fix = (
            f"boot with `{F.UNIFIED_BOOT}` on the kernel command line, or free the "
            f"controllers from v1 one by one (below); {machine}"
        )
        return Check("cgroups", "layout", "degraded", detail, disables, fix)
    all_v2 = ["every cgroup v2 limit and figure, per-cgroup PSI, cgroup.kill and cgroup.freeze"]
    if layout.kind == "legacy":
        detail = f"legacy: no cgroup2 mounted; cgroup v1 holds {v1} (under {where})"
        fix = f"boot with `systemd.unified_cgroup_hierarchy=1`; {machine}"
        return Check("cgroups", "layout", "missing", detail, all_v2, fix)
    fix = f"mount -t cgroup2 none /sys/fs/cgroup; {machine}"
    return Check("cgroups", "layout", "missing", "no cgroup filesystem is mounted", all_v2, fix)


def _controller_check(name: str, facts: Facts, corral: str) -> Check:
    """A controller is usable when the cgroup2 root offers it in cgroup.controllers; one bound
    to a v1 hierarchy is absent there until that hierarchy is unmounted or never made."""
    root = facts.root
    if root is not None and name in root.available:
        detail = f"available at {root.path}"
        if name not in root.enabled:
            detail += " (not yet in its cgroup.subtree_control; corral enables it)"
        return Check("cgroups", name, "ok", detail)
    disables = F.CONTROLLER_FEATURES[name]
    still = "; cpu.stat usage and PSI still work without it" if name == "cpu" else ""
    machine = F.machine_fix(corral)
    if root is None:
        detail = "no cgroup2 hierarchy" + still
        return Check("cgroups", name, "missing", detail, disables, "see layout")
    v1 = facts.layout.v1_mounts_of(name)
    if v1:
        detail = f"not in {root.path}/cgroup.controllers: bound to cgroup v1 at "
        detail += " and ".join(v1.values()) + still
        fix = (
            f"boot with cgroup_no_v1={','.join(v1)}, or remove the cgroups under "
            f"{' and '.join(v1.values())} and unmount {'them' if len(v1) > 1 else 'it'} "
            "(the controller then moves to cgroup2); or use the machine (see layout)"
        )
        return Check("cgroups", name, "missing", detail, disables, fix)
    if f"cgroup_disable={name}" in facts.kernel.cmdline:
        detail = f"disabled by cgroup_disable={name} on the kernel command line{still}"
        fix = f"remove cgroup_disable={name} from the kernel command line; {machine}"
        return Check("cgroups", name, "missing", detail, disables, fix)
    detail = f"not in {root.path}/cgroup.controllers: this kernel lacks it{still}"
    fix = f"use a kernel built with {F.CONTROLLER_CONFIG[name]}; {machine}"
    return Check("cgroups", name, "missing", detail, disables, fix)


def _cpu_stat_check(facts: Facts) -> Check:
    stat = facts.cpu_stat
    if stat is not None and stat.usage:
        detail = f"usage_usec in {stat.path} (kept by the cgroup core, no controller needed)"
        return Check("cgroups", "cpu.stat usage", "ok", detail)
    where = stat.path if stat else "no cgroup2 hierarchy"
    fix = "use a kernel with cgroup2 (Linux 4.15+), mounted"
    detail = f"{where}: no usage_usec"
    return Check("cgroups", "cpu.stat usage", "missing", detail, F.CPU_STAT_FEATURES, fix)


def _parent_check(facts: Facts) -> Check:
    parent = facts.parent
    assert parent is not None
    if not parent.exists:
        detail = f"{parent.path} does not exist yet; corral creates it on first use"
        return Check("cgroups", "parent", "info", detail)
    wanted = [c for c in F.NEEDED_CONTROLLERS if c in facts.root_available]
    off = [c for c in wanted if c not in parent.enabled]
    detail = (
        f"{parent.path}: available: {' '.join(parent.available) or 'none'}; "
        f"enabled for containers: {' '.join(parent.enabled) or 'none'}"
    )
    if off:
        detail += f"; corral enables {' '.join(off)} when it starts a container"
    return Check("cgroups", "parent", "info", detail)


def psi_checks(facts: Facts, corral: str) -> list[Check]:
    psi = facts.psi
    if psi.available:
        where = "/proc/pressure/{cpu,memory,io}"
        if facts.cgroup_root:
            where += f" and {facts.cgroup_root}/{{cpu,memory,io}}.pressure"
        return [Check("psi", "psi", "ok", f"{where} readable")]
    error = psi.error or "no cgroup2 hierarchy to read *.pressure in"
    if "EOPNOTSUPP" in error:
        fix = (
            "remove psi=0 from the kernel command line (add psi=1 if the kernel is "
            "built with CONFIG_PSI_DEFAULT_DISABLED)"
        )
    else:
        fix = f"use a kernel built with CONFIG_PSI (Linux 4.20+); {F.machine_fix(corral)}"
    return [Check("psi", "psi", "missing", error, F.PSI_FEATURES, fix)]


def namespace_checks(facts: Facts) -> list[Check]:
    out = []
    for name, result in facts.namespaces.items():
        flag = f"unshare({_flag_name(name)})"
        if result.ok:
            how = " inside a new user namespace only" if result.with_userns else ""
            out.append(Check("namespaces", name, "ok", f"{flag} works{how}"))
            continue
        error = result.error or "failed"
        fix = F.namespace_fix(name, error)
        disables = F.NAMESPACE_FEATURES[name]
        out.append(Check("namespaces", name, "missing", f"{flag}: {error}", disables, fix))
    return out


def _flag_name(name: str) -> str:
    flag = syscalls.NAMESPACE_FLAGS[name]
    for attr in dir(syscalls):
        if attr.startswith("CLONE_") and getattr(syscalls, attr) == flag:
            return attr
    return hex(flag)


def userns_checks(facts: Facts) -> list[Check]:
    u = facts.userns
    root = facts.privileges.euid == 0
    knobs = [f"user.max_user_namespaces={u.max_user_namespaces}"]
    if u.unprivileged_userns_clone is not None:
        knobs.append(f"kernel.unprivileged_userns_clone={u.unprivileged_userns_clone}")
    if u.apparmor_restrict is not None:
        knobs.append(f"kernel.apparmor_restrict_unprivileged_userns={u.apparmor_restrict}")
    detail = " ".join(knobs)
    if u.max_user_namespaces == 0:
        fix = "sysctl -w user.max_user_namespaces=15000"
        limits = Check("userns", "limits", "missing", detail, F.NAMESPACE_FEATURES["user"], fix)
    elif not root and (u.unprivileged_userns_clone == 0 or u.apparmor_restrict == 1):
        fix = "sysctl -w kernel.unprivileged_userns_clone=1 (Debian) or "
        fix += "kernel.apparmor_restrict_unprivileged_userns=0 (Ubuntu), or run as root"
        limits = Check("userns", "limits", "degraded", detail, ["rootless containers"], fix)
    else:
        limits = Check("userns", "limits", "info", detail)
    return [limits, _subid_check(facts)]


def _subid_check(facts: Facts) -> Check:
    u = facts.userns
    if u.subuid and u.subgid:
        ranges = " ".join(f"{a}+{n}" for a, n in u.subuid)
        return Check("userns", "subuid", "info", f"/etc/subuid for {u.user}: {ranges}")
    detail = f"no /etc/subuid and /etc/subgid entries for {u.user}"
    if facts.privileges.euid == 0:
        return Check("userns", "subuid", "info", detail + " (not needed as root)")
    fix = f"usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {u.user}"
    detail += ": rootless containers can map only your own uid"
    return Check("userns", "subuid", "info", detail, fix=fix)


def privilege_checks(facts: Facts) -> list[Check]:
    p = facts.privileges
    who = f"euid {p.euid}, CAP_SYS_ADMIN {'yes' if p.cap_sys_admin else 'no'}"
    where = facts.cgroup_root
    writable = "writable" if p.cgroup_writable else "not writable"
    if where:
        who += f"; {where}/cgroup.subtree_control {writable}"
    if (p.euid == 0 or p.cap_sys_admin) and (p.cgroup_writable or where is None):
        return [Check("privileges", "privileges", "ok", who)]
    fix = "run corral as root (sudo), or delegate a cgroup subtree to this user (Delegate=yes)"
    return [Check("privileges", "privileges", "degraded", who, F.PRIVILEGE_FEATURES, fix)]


def machine_checks(facts: Facts, corral: str) -> list[Check]:
    """On a unified host the machine is a convenience; elsewhere it is the fix."""
    m = facts.machine
    found = f"qemu {m.qemu}, kernel {m.kernel}, vng {m.vng}"
    kvm = (
        "usable: the machine runs at full speed" if m.kvm_usable else f"not usable: {m.kvm_detail}"
    )
    kvm_check = Check("machine", "kvm", "info", kvm)
    if facts.layout.kind == "unified":
        state = "it can run here" if m.ready else "not set up: " + "; ".join(m.missing)
        detail = f"not needed: this host has cgroup v2 unified; {state}"
        return [Check("machine", "machine", "info", detail), kvm_check]
    if m.ready:
        return [Check("machine", "machine", "ok", f"can run here: {found}"), kvm_check]
    fix = f"{corral} machine setup (installs {' '.join(APT_PACKAGES)} and {PIP_PACKAGE})"
    detail = "; ".join(m.missing)
    return [Check("machine", "machine", "missing", detail, F.MACHINE_FEATURES, fix), kvm_check]
