"""Wall-clock helpers shared by the benchmark scripts (run from scripts/, which is on sys.path)."""

import statistics
import time


def seconds(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def median_seconds(fn, repeats: int) -> float:
    """Median of ``repeats`` calls after one warm-up call (the first pays for kernel selection)."""
    fn()
    return statistics.median(seconds(fn) for _ in range(repeats))
