"""Pressure stall information as the kernel keeps it for one cgroup (accounting/psi.rst):
cumulative ``total`` microseconds per resource and line, and avg10/avg60/avg300, the stall
percentage decayed exponentially over 10, 60 and 300 s (psi.c calc_avgs)."""

from __future__ import annotations

import math
from collections.abc import Mapping

from runtime.cgroupfs.pressure import Pressure, PressureLine

KEYS = ("cpu.some", "cpu.full", "memory.some", "memory.full", "io.some", "io.full")
WINDOWS = (10.0, 60.0, 300.0)


class Psi:
    """One cgroup's stall counters; ``update`` adds a tick of stall shares (0..1 of it)."""

    def __init__(self) -> None:
        self.total = dict.fromkeys(KEYS, 0.0)
        self.avg = {key: [0.0, 0.0, 0.0] for key in KEYS}
        self.last: dict[str, float] = dict.fromkeys(KEYS, 0.0)

    def update(self, shares: Mapping[str, float], dt: float) -> None:
        for key in KEYS:
            share = min(max(shares.get(key, 0.0), 0.0), 1.0)
            self.last[key] = share
            self.total[key] += share * dt * 1e6
            avg = self.avg[key]
            for i, window in enumerate(WINDOWS):
                decay = math.exp(-dt / window)
                avg[i] = avg[i] * decay + 100.0 * share * (1.0 - decay)

    def pressure(self, resource: str) -> Pressure:
        """The ``resource``.pressure file's two lines."""

        def line(kind: str) -> PressureLine:
            key = f"{resource}.{kind}"
            a10, a60, a300 = (round(a, 2) for a in self.avg[key])
            return PressureLine(a10, a60, a300, int(self.total[key]))

        return Pressure(some=line("some"), full=line("full"))
