"""`corral demo`: the agent with a demo policy and a handful of containers that show each
part of the enforcer, then `corral top` on it (or, headless, a summary).

workloads.py: the containers; policy.toml: the demo policy (package data); stage.py: the
agent and containers on a cgroup v2 kernel, and their teardown; forked.py: the `corral`
commands as forked children; where.py: this host or a `corral machine`; summary.py: what the
agent's HTTP API says at the end; session.py: one run.
"""
