"""Runs first inside the machine: prepares it, then execs the user's command.

- enables every available controller in the root's cgroup.subtree_control (the root is
  exempt from "no internal processes", so nothing needs moving);
- exports CORRAL_MACHINE_DISK=/dev/vdX when the machine has a scratch disk;
- with ``--net ADDR``, brings up the virtio NIC that carries the forwarded ports.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from runtime.cgroupfs import CgroupFS


def enable_all_controllers(fs: CgroupFS) -> list[str]:
    return fs.enable_controllers("", sorted(fs.controllers("")))


def scratch_disk(sys_block: str = "/sys/block") -> str | None:
    disks = sorted(d for d in os.listdir(sys_block) if d.startswith("vd"))
    return f"/dev/{disks[0]}" if disks else None


def bring_up_network(address: str, sys_net: str = "/sys/class/net") -> str:
    nics = sorted(n for n in os.listdir(sys_net) if n != "lo")
    if not nics:
        raise SystemExit("corral machine: --forward given but the guest has no network card")
    nic = nics[0]
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "link", "set", nic, "up"], check=True)
    subprocess.run(["ip", "addr", "add", address, "dev", nic], check=True)
    return nic


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="corral-machine-guest")
    parser.add_argument("--net", metavar="ADDR")
    parser.add_argument("--out", metavar="DIR")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    enable_all_controllers(CgroupFS())
    disk = scratch_disk()
    if disk:
        os.environ["CORRAL_MACHINE_DISK"] = disk
    if args.out:
        os.environ["CORRAL_MACHINE_OUT"] = args.out
    if args.net:
        bring_up_network(args.net)
    sys.stdout.flush()
    try:
        os.execvp(command[0], command)
    except FileNotFoundError:
        print(f"corral machine: {command[0]}: command not found", file=sys.stderr)
        raise SystemExit(127) from None
    except PermissionError:
        print(f"corral machine: {command[0]}: permission denied", file=sys.stderr)
        raise SystemExit(126) from None


if __name__ == "__main__":
    main()
