"""The runtime's section of BENCHMARKS.md, from bench/out/oci.json (in the machine) and
bench/out/oci_host.json (on this host, where crun does not run): start-to-exit of `true` in
a busybox bundle, corral vs runc vs crun, and the peak RSS of corral's per-container shim."""

from __future__ import annotations

from typing import Any


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def section(results: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "## Runtime: start to exit against runc and crun",
        "",
        "`bench/oci_bench.py`: `RUNTIME run` of a busybox bundle whose process is `true` "
        "(create, start, wait and delete in one command, the same verb for all), interleaved "
        "with the order rotated each round; the shim's peak RSS is its VmHWM.",
        "",
        "| where | run at (commit) | runs | corral median | runc median | crun median | "
        "corral / runc | corral / crun | shim peak RSS |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for where, r in results.items():
        s, ratios = r["seconds"], r["ratios"]

        def med(rt: str, s: dict[str, Any] = s) -> str:
            return f"{s[rt]['median'] * 1e3:.0f} ms" if rt in s else "-"

        def ratio(key: str, ratios: dict[str, Any] = ratios) -> str:
            return f"{ratios[key]:.1f}x" if ratios.get(key) is not None else "-"

        lines.append(
            f"| {where} | {r.get('date', '-')} ({r.get('commit', '-')}) | {r['runs']} | "
            f"{med('corral')} | {med('runc')} | {med('crun')} | "
            f"{ratio('corral_over_runc')} | {ratio('corral_over_crun')} | "
            f"{r['helper_rss']['peak_mb']:.1f} MB |"
        )
    lines += ["", "| target | |", "|---|---|"]
    for where, r in results.items():
        met = r["met"]
        for key, what in (
            ("corral_over_runc", "corral no slower than runc"),
            ("corral_over_crun", "corral within 2x of crun"),
            ("helper_rss_mb", "shim RSS under 12 MB"),
        ):
            if met.get(key) is not None:
                lines.append(f"| {what} ({where}) | {_met(bool(met[key]))} |")
    return [*lines, ""]
