"""What the benchmarks report about a list of per-call latencies (nanoseconds)."""

from __future__ import annotations


def latency_summary(lat_ns: list[int], cpu_s: float | None = None) -> dict:
    """calls, p50_us, p99_us (and cpu_us_per_call when the process CPU seconds are given)."""
    lat = sorted(lat_ns)
    n = len(lat)
    out = {"calls": n, "p50_us": lat[n // 2] / 1000, "p99_us": lat[(n * 99) // 100] / 1000}
    if cpu_s is not None:
        out["cpu_us_per_call"] = cpu_s / n * 1e6
    return out
