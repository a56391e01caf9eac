"""`corral machine`: a throwaway VM with a real cgroup v2 kernel, for hosts that lack one.

It boots Debian's kernel with virtme-ng under qemu, sharing the host's filesystem read-only
over 9p (DESIGN.md, "The machines this is built and tested on").
"""

from runtime.machine.requirements import Requirements, find_requirements
from runtime.machine.vm import MachineError, MachineSpec, build_command, run

__all__ = [
    "MachineError",
    "MachineSpec",
    "Requirements",
    "build_command",
    "find_requirements",
    "run",
]
