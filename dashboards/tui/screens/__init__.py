"""The screens of `corral top`, one per file: main (the table), help, detail (one cgroup) and
enforcer (the action log)."""
