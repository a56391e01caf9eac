"""What a SIGHUP reload may change live (corral.agent.service applies it).

- ``listen``, ``web_config``, ``cgroup_leaf`` and every ``[collector]`` key need a restart:
  the socket, the TLS context, the cgroup the agent moved into and the collector's open
  files and watches are made once. A change is logged and the running value stays.
- The policy (its files re-read even when the configuration did not change) is swapped into
  the running enforcement loop when the loop's mode is unchanged: the same ``dry_run`` and
  audit log. Otherwise, and for enforcement switched on or off or a new ``interval`` without
  a policy, the poller or loop is replaced.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pydantic import BaseModel

from corral.agent.config import AgentConfig
from corral.agent.plan import audit_path

if TYPE_CHECKING:
    from enforce.policy.schema import Policy

log = logging.getLogger("corral.serve")
RESTART_KEYS = ("listen", "web_config", "cgroup_leaf", "collector")


def keep_restart_keys(old: AgentConfig, new: AgentConfig) -> AgentConfig:
    """``new`` with the running value of every key that cannot change live, each change
    logged as needing a restart."""
    kept: dict[str, object] = {}
    for key in RESTART_KEYS:
        before, after = getattr(old, key), getattr(new, key)
        if before == after:
            continue
        names = [key]
        if isinstance(before, BaseModel):
            names = [f"{key}.{k}" for k in type(before).model_fields
                     if getattr(before, k) != getattr(after, k)]  # fmt: skip
        log.warning("%s changed: needs a restart; the running value stays", ", ".join(names))
        kept[key] = before
    return new.model_copy(update=kept) if kept else new


def same_runner(
    old: AgentConfig, before: Policy | None, new: AgentConfig, policy: Policy | None
) -> bool:
    """Whether the running poller or loop can stay (a policy is then swapped into it)."""
    if (before is None) != (policy is None):
        return False  # enforcement switched on or off
    if before is None or policy is None:
        return old.interval == new.interval
    return old.enforcer.dry_run == new.enforcer.dry_run and audit_path(old, before) == audit_path(
        new, policy
    )
