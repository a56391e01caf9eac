"""process of config.json (runtime-spec config.md "Process"): args, env, cwd, user,
capabilities, rlimits, noNewPrivileges; terminal must be false.

Ids are uint32 but 4294967295 is (uid_t)-1, which setresuid(2) reads as "leave unchanged",
so ids run 0..4294967294. rlimits are uint64 (18446744073709551615 is RLIM_INFINITY), each
type once, soft at most hard (setrlimit(2) refuses soft > hard with EINVAL). Capabilities
are checked against the names this corral knows (runtime.security.capabilities); an
unknown name is refused (runc only warns).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runtime.oci.fields import (
    MISSING,
    UINT32_MAX,
    UINT64_MAX,
    OciConfigError,
    array,
    boolean,
    check_keys,
    integer,
    join,
    obj,
    string,
    strings,
)
from runtime.security.capabilities import CAP_NUMBER, CAPABILITIES
from runtime.security.process import RLIMITS

ID_MAX = UINT32_MAX - 1
CAP_SETS = ("bounding", "effective", "permitted", "inheritable", "ambient")
_NO = "is not supported by corral"
REFUSED = {
    "consoleSize": "needs a terminal; corral runs containers without one",
    "apparmorProfile": f"AppArmor {_NO}",
    "selinuxLabel": f"SELinux {_NO}",
    "oomScoreAdj": f"{_NO}; leave it out",
    "ioPriority": f"{_NO}; leave it out",
    "scheduler": f"{_NO}; leave it out",
    "execCPUAffinity": f"{_NO}; leave it out",
    "commandLine": "is Windows-only",
}
SUPPORTED = ("terminal", "user", "args", "env", "cwd", "capabilities", "rlimits",
             "noNewPrivileges")  # fmt: skip


@dataclass(frozen=True)
class OciCapabilities:
    """process.capabilities: each set a frozenset of canonical CAP_ names."""

    bounding: frozenset[str] = frozenset()
    effective: frozenset[str] = frozenset()
    permitted: frozenset[str] = frozenset()
    inheritable: frozenset[str] = frozenset()
    ambient: frozenset[str] = frozenset()


@dataclass(frozen=True)
class OciProcess:
    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str
    uid: int
    gid: int
    additional_gids: tuple[int, ...]
    umask: int | None
    capabilities: OciCapabilities
    rlimits: tuple[tuple[str, int, int], ...]
    no_new_privileges: bool


def parse_process(value: object) -> OciProcess:
    data = obj(value, "process")
    check_keys(data, "process", SUPPORTED, REFUSED)
    if boolean(data.get("terminal", False), "process.terminal"):
        raise OciConfigError(
            "process.terminal", True, "corral runs containers without a terminal; set false"
        )
    args = strings(data.get("args", MISSING), "process.args")
    if not args or not args[0]:
        raise OciConfigError("process.args", list(args), "needs the program to run first")
    cwd = string(data.get("cwd", MISSING), "process.cwd")
    if not cwd.startswith("/"):
        raise OciConfigError("process.cwd", cwd, "must be an absolute path in the container")
    uid, gid, gids, umask = _user(data.get("user", MISSING))
    caps = data.get("capabilities")
    return OciProcess(
        args=args,
        env=_env(data.get("env", [])),
        cwd=cwd,
        uid=uid,
        gid=gid,
        additional_gids=gids,
        umask=umask,
        capabilities=OciCapabilities() if caps is None else _capabilities(caps),
        rlimits=_rlimits(data.get("rlimits", [])),
        no_new_privileges=boolean(data.get("noNewPrivileges", False), "process.noNewPrivileges"),
    )


def _env(value: object) -> tuple[str, ...]:
    env = strings(value, "process.env")
    for i, item in enumerate(env):
        if "=" not in item or item.startswith("="):
            raise OciConfigError(join("process.env", i), item, "must be NAME=VALUE")
    return env


def _user(value: object) -> tuple[int, int, tuple[int, ...], int | None]:
    where = "process.user"
    data: dict[str, Any] = obj(value, where)
    check_keys(
        data, where, ("uid", "gid", "umask", "additionalGids"), {"username": "is Windows-only"}
    )
    ids = f"an id 0..{ID_MAX} ({ID_MAX + 1} is (uid_t)-1, which setresuid reads as 'unchanged')"
    uid = integer(data.get("uid", MISSING), join(where, "uid"), 0, ID_MAX, ids)
    gid = integer(data.get("gid", MISSING), join(where, "gid"), 0, ID_MAX, ids)
    gids_path = join(where, "additionalGids")
    gids = tuple(
        integer(g, join(gids_path, i), 0, ID_MAX, ids)
        for i, g in enumerate(array(data.get("additionalGids", []), gids_path))
    )
    umask = data.get("umask")
    if umask is not None:
        umask = integer(umask, join(where, "umask"), 0, 0o777, "a mode 0..511 (0o777)")
    return uid, gid, gids, umask


def _capabilities(value: object) -> OciCapabilities:
    where = "process.capabilities"
    data = obj(value, where)
    check_keys(data, where, CAP_SETS, {})
    sets = {}
    for name in CAP_SETS:
        path = join(where, name)
        caps = strings(data.get(name, []), path)
        for i, cap in enumerate(caps):
            if cap not in CAP_NUMBER:
                raise OciConfigError(
                    join(path, i),
                    cap,
                    "unknown capability; allowed "
                    f"the capabilities(7) names {CAPABILITIES[0]} .. "
                    f"{CAPABILITIES[-1]}",
                )
        sets[name] = frozenset(caps)
    return OciCapabilities(**sets)


def _rlimits(value: object) -> tuple[tuple[str, int, int], ...]:
    out: list[tuple[str, int, int]] = []
    where = "process.rlimits"
    for i, item in enumerate(array(value, where)):
        path = join(where, i)
        data = obj(item, path)
        check_keys(data, path, ("type", "soft", "hard"), {})
        kind = string(data.get("type", MISSING), join(path, "type"))
        if kind not in RLIMITS:
            raise OciConfigError(join(path, "type"), kind, f"allowed {', '.join(RLIMITS)}")
        for j, (earlier, _, _) in enumerate(out):
            if earlier == kind:
                raise OciConfigError(
                    join(path, "type"), kind, f"already {where}[{j}]; each type may be given once"
                )
        soft, hard = (
            integer(
                data.get(k, MISSING),
                join(path, k),
                0,
                UINT64_MAX,
                f"0..{UINT64_MAX} ({UINT64_MAX} is unlimited)",
            )
            for k in ("soft", "hard")
        )
        if soft > hard:
            raise OciConfigError(join(path, "soft"), soft, f"must be at most hard ({hard})")
        out.append((kind, soft, hard))
    return tuple(out)
