"""The agent's configuration: a TOML file (default /etc/corral/corral.toml) validated into a
frozen ``AgentConfig``, with `corral serve`'s flags laid over it.

Errors name FILE:LINE, the key path, the bad value and what is allowed, as the policy
loader's do (enforce.policy.toml_lines finds the lines); a value given by a flag is named by
the flag instead. Durations use the policy schema's grammar ("1s", "500ms", "2m", 1.5) and
sizes the limit syntax ("64M", "1G"). A missing default file means every default; a missing
file named with --config is an error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from enforce.policy.schema import Duration, Size
from enforce.policy.toml_lines import LocatedError, allowed, describe, read_toml, table_line
from monitor.collector import DEFAULT_RECHECK_EVERY, CollectorConfig
from monitor.exporter import DEFAULT_HOST, DEFAULT_PORT
from monitor.exporter.server import parse_listen

DEFAULT_PATH = "/etc/corral/corral.toml"
DEFAULT_FD_LIMIT = 32768  # as corral.cli.selection's --fd-limit
Key = tuple[str, ...]


class ConfigError(LocatedError):
    """A configuration that cannot be used: one "FILE:LINE: key: ..." line per fault."""


def _listen(value: str) -> str:
    try:
        parse_listen(value)
    except ValueError:
        raise ValueError(f"allowed: HOST:PORT like {DEFAULT_HOST}:{DEFAULT_PORT}") from None
    return value


def _subtree(value: str) -> str:
    try:
        CollectorConfig(subtree=value)
    except ValueError as e:
        raise ValueError(f"allowed: a cgroup path below the root ({e})") from None
    return value


def _leaf(value: str) -> str:
    if value in (".", "..") or not re.fullmatch(r"[\w.@:-]*", value):
        raise ValueError("allowed: one cgroup name (letters, digits, _ . @ : -) or '' for none")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CollectorSection(_Model):
    """[collector]: which cgroups are read (as `corral record`'s options). Every key here
    needs a restart: the collector's open files and watches are made once."""

    cgroup_root: str | None = Field(
        default=None, description="The cgroup2 mount; default: found in /proc/self/mountinfo."
    )
    subtree: Annotated[str, AfterValidator(_subtree)] = Field(
        default="", description='Only this cgroup and below ("" = the whole tree).'
    )
    include: tuple[str, ...] = Field(
        default=("**",), description="Globs over cgroup paths: the cgroups to read."
    )
    exclude: tuple[str, ...] = Field(default=(), description="Globs of cgroups to skip.")
    max_depth: int | None = Field(
        default=None, ge=0, description="Levels below the subtree; default: no limit."
    )
    fd_limit: int = Field(
        default=DEFAULT_FD_LIMIT,
        ge=0,
        description="Cgroup files kept open between polls (about 15 per cgroup); 0 reopens "
        "every file each poll.",
    )
    recheck_every: int = Field(
        default=DEFAULT_RECHECK_EVERY,
        ge=1,
        description="Limit and event files are read when inotify says they changed, and "
        "every file of a cgroup at least once per this many polls.",
    )

    def collector_config(self) -> CollectorConfig:
        return CollectorConfig(
            self.subtree,
            self.include or ("**",),
            self.exclude,
            self.max_depth,
            self.fd_limit,
            self.recheck_every,
        )


class EnforcerSection(_Model):
    """[enforcer]: the policy enforced, if any (its own [enforcer] table tunes the rest)."""

    enabled: bool = Field(
        default=True, description="false: collect and export only, even with a policy named."
    )
    policy: str | None = Field(
        default=None,
        description="The policy enforced: a TOML file, or a directory whose *.toml files "
        "merge in name order (docs/policy.md). Without one, enforcement is off.",
    )
    dry_run: bool = Field(
        default=False, description="Decide and audit by the policy; write nothing."
    )
    audit_log: str | None = Field(
        default=None,
        description="The audit log (JSON lines); default: the policy's [enforcer] audit_log; "
        '"" keeps it in memory only (/api/v1/audit still serves it).',
    )

    @property
    def active(self) -> bool:
        return self.enabled and self.policy is not None


class RecordSection(_Model):
    """[record]: write the polls the agent exports to a recording (`corral top --replay`)."""

    path: str | None = Field(
        default=None,
        description="Record the exported snapshots here; default: no recording. A file left "
        "by an earlier run is rotated away.",
    )
    interval: Duration = Field(
        default=0.0, ge=0, le=3600, description="At least this long between frames; 0: every poll."
    )
    max_bytes: Size | None = Field(
        default=None,
        ge=4096,
        description="Rotate past this size (PATH -> PATH.1 -> ... -> PATH.keep); default: never.",
    )
    keep: int = Field(
        default=3, ge=0, le=100, description="Rotated files kept (0: a rotation deletes the file)."
    )


class AgentConfig(_Model):
    """The whole file: top-level keys and the three tables."""

    listen: Annotated[str, AfterValidator(_listen)] = Field(
        default=f"{DEFAULT_HOST}:{DEFAULT_PORT}",
        description="Address of /metrics, /healthz, /api/v1 and the landing page: HOST:PORT "
        "or [V6]:PORT. Needs a restart.",
    )
    interval: Duration = Field(
        default=1.0,
        ge=0.1,
        le=3600,
        description="Time between polls when no policy runs (with one: the policy's "
        "[enforcer] tick_seconds).",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info",
        description="To stderr, one line per event, with sd-daemon priorities under systemd.",
    )
    web_config: str | None = Field(
        default=None,
        description="TLS and basic auth in the Prometheus exporters' web config format "
        "(YAML). Needs a restart.",
    )
    cgroup_leaf: Annotated[str, AfterValidator(_leaf)] = Field(
        default="agent",
        description="At start the agent moves into this child of its own cgroup (as "
        'DelegateSubgroup= does); "" stays where started. Needs a restart.',
    )
    collector: CollectorSection = Field(default=CollectorSection(), description="[collector]")
    enforcer: EnforcerSection = Field(default=EnforcerSection(), description="[enforcer]")
    record: RecordSection = Field(default=RecordSection(), description="[record]")


def load_config(
    path: str | None, overrides: Mapping[Key, tuple[str, object]] | None = None
) -> tuple[AgentConfig, str | None]:
    """The file at ``path`` (None: DEFAULT_PATH, which may be missing) with ``overrides``
    (key path -> (flag, value)) laid over it. Returns the config and the file it came from
    (None when the default file does not exist). Raises ConfigError."""
    overrides = overrides or {}
    file = Path(path or DEFAULT_PATH)
    raw: dict[str, Any] = {}
    text = ""
    source: str | None = str(file)
    if path is None and not file.exists():
        source = None
    else:
        raw, text = read_toml(file, "configuration", ConfigError)
    merged = _merge(raw, overrides)
    try:
        config = AgentConfig.model_validate(merged)
    except ValidationError as e:
        errors = [
            _describe(
                {**err, "input": _raw_at(merged, err)}, text, source or DEFAULT_PATH, overrides
            )
            for err in e.errors()
        ]
        raise ConfigError(errors) from None
    _check_enforcer(config, text, source or DEFAULT_PATH, overrides)
    return config, source


def _merge(raw: dict[str, Any], overrides: Mapping[Key, tuple[str, object]]) -> dict[str, Any]:
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for key, (_, value) in overrides.items():
        table = merged
        for part in key[:-1]:
            inner = table.get(part)
            table[part] = inner = dict(inner) if isinstance(inner, dict) else {}
            table = inner
        table[key[-1]] = value
    return merged


def _raw_at(raw: Any, err: Any) -> Any:
    """The value as written ("0s"), not as a validator turned it (0.0)."""
    for part in err["loc"]:
        try:
            raw = raw[part]
        except (KeyError, IndexError, TypeError):
            return err.get("input")
    return raw


def _describe(err: Any, text: str, source: str, overrides: Mapping[Key, tuple[str, object]]) -> str:
    """A value a flag gave is named by the flag; one from the file by FILE:LINE."""
    loc = tuple(p for p in err["loc"] if not isinstance(p, int))
    for key, (flag, value) in overrides.items():
        if loc[: len(key)] == key:
            return f"{flag}: bad value {value!r}: {allowed(err)}"
    return describe(err, source, table_line(text, tuple(err["loc"])), AgentConfig, "(config)")


def _check_enforcer(
    config: AgentConfig, text: str, source: str, overrides: Mapping[Key, tuple[str, object]]
) -> None:
    """dry_run and audit_log mean nothing without a policy: refused rather than ignored."""
    e = config.enforcer
    if e.policy is not None or not (e.dry_run or e.audit_log is not None):
        return
    if ("enforcer", "dry_run") in overrides or ("enforcer", "audit_log") in overrides:
        raise ConfigError(["--dry-run and --audit-log need --policy FILE|DIR"])
    key = "dry_run" if e.dry_run else "audit_log"
    line = table_line(text, ("enforcer", key))
    raise ConfigError(
        [f"{source}:{line}: enforcer.{key}: needs a policy: allowed: set enforcer.policy"]
    )
