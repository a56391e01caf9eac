"""The agent behind `corral serve`: its configuration file (config), what a configuration
runs (plan), the running service with its signals and reloads (service), its own leaf cgroup
(leaf), its recording (recording) and sd_notify (notify)."""
