"""Everything in corral that talks to the kernel: cgroup v2 files, syscalls, the machine."""
