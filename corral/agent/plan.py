"""What a configuration asks the agent to run: its policy loaded and validated, the audit log
it would write, and the one-paragraph account that `corral serve --check-config` prints."""

from __future__ import annotations

from typing import TYPE_CHECKING

from corral.agent.config import DEFAULT_PATH, AgentConfig
from monitor.exporter.webconfig import WebConfig

if TYPE_CHECKING:  # the enforcer is imported only when a policy is given
    from enforce.policy.schema import Policy


def load_policy_of(config: AgentConfig) -> Policy | None:
    """The policy ``config`` enforces (None: enforcement off). Raises PolicyError."""
    if not config.enforcer.active or config.enforcer.policy is None:
        return None
    from enforce.policy import load_policies

    return load_policies(config.enforcer.policy)


def audit_path(config: AgentConfig, policy: Policy | None) -> str | None:
    """enforcer.audit_log, else the policy's [enforcer] audit_log ("" = memory only)."""
    if policy is None:
        return None
    path = config.enforcer.audit_log
    return path if path is not None else policy.settings.audit_log


def poll_every(config: AgentConfig, policy: Policy | None) -> float:
    """With a policy the loop polls at the policy's tick; without, every ``interval``."""
    return policy.settings.tick_seconds if policy is not None else config.interval


def enforcement(config: AgentConfig, policy: Policy | None) -> str:
    """ "enforcing P as a dry run, audit to A" or "enforcement off" (and why)."""
    if policy is None:
        if config.enforcer.policy is not None:
            return f"enforcement off (enforcer.enabled = false; policy {config.enforcer.policy})"
        return "enforcement off"
    dry = " as a dry run" if config.enforcer.dry_run else ""
    return f"enforcing {policy.source}{dry}, audit to {audit_path(config, policy) or 'memory only'}"


def polling(config: AgentConfig, policy: Policy | None, cgroup_root: str, count: int) -> str:
    """The start line's account: what is polled, how often, and what is enforced."""
    where = f"{cgroup_root}/{config.collector.subtree}".rstrip("/")
    rec = f", recording to {config.record.path}," if config.record.path else ""
    every = f"every {poll_every(config, policy):g}s"
    if policy is not None:
        every += " (the policy's tick) and on PSI triggers"
    return f"polling {count} cgroup(s) under {where}{rec} {every}; " + enforcement(config, policy)


def summary(
    config: AgentConfig,
    source: str | None,
    policy: Policy | None,
    web: WebConfig | None,
    cgroup_root: str,
) -> str:
    """One paragraph: what `corral serve` with this configuration would run."""
    c = config.collector
    where = f"{cgroup_root}/{c.subtree}".rstrip("/")
    parts = [
        f"configuration {source}" if source else f"configuration: defaults ({DEFAULT_PATH} absent)",
        f"listen on {config.listen}"
        + (" with TLS" if web is not None and web.context is not None else "")
        + (" with basic auth" if web is not None and web.users else ""),
        f"poll the cgroups under {where} matching {', '.join(c.include) or '**'}"
        + (f" except {', '.join(c.exclude)}" if c.exclude else "")
        + (f" to depth {c.max_depth}" if c.max_depth is not None else "")
        + f" every {poll_every(config, policy):g}s"
        + (" (the policy's tick, and on PSI triggers)" if policy is not None else ""),
    ]
    if policy is not None:
        names = ", ".join(r.name for r in policy.rules) or "none"
        parts.append(enforcement(config, policy) + f" ({len(policy.rules)} rule(s): {names})")
    else:
        parts.append(enforcement(config, policy))
    r = config.record
    if r.path is not None:
        size = f", rotated past {r.max_bytes} bytes keeping {r.keep}" if r.max_bytes else ""
        every = f" at most every {r.interval:g}s" if r.interval else " every poll"
        parts.append(f"record to {r.path}{every}{size}")
    else:
        parts.append("no recording")
    leaf = config.cgroup_leaf
    parts.append(
        f"move itself into a leaf cgroup {leaf!r} of its own cgroup"
        if leaf
        else "stay in the cgroup it is started in"
    )
    return "corral serve would: " + "; ".join(parts) + ". The configuration is valid."
