"""The policy language: schema (pydantic models), load (TOML -> Policy, errors naming
file:line and field) and select (which rule governs which cgroup)."""

from __future__ import annotations

from enforce.policy.load import PolicyError, load_policies, load_policy
from enforce.policy.schema import (
    CpuQuotaParams,
    EnforcerSettings,
    IoPressureParams,
    LimitsParams,
    MemoryPressureParams,
    OomGuardParams,
    PidsGuardParams,
    Policy,
    Rule,
    Selector,
)

__all__ = [
    "CpuQuotaParams",
    "EnforcerSettings",
    "IoPressureParams",
    "LimitsParams",
    "MemoryPressureParams",
    "OomGuardParams",
    "PidsGuardParams",
    "Policy",
    "PolicyError",
    "Rule",
    "Selector",
    "load_policies",
    "load_policy",
]
