"""Wall-clock helpers shared by the benchmark scripts (run from scripts/, which is on sys.path)."""

import statistics
import time


def seconds(fn) -> float:
    """Seconds ``fn()`` takes; what it returns is freed after the clock stops (freeing a loaded
    tokenizer's 250k-entry vocabulary takes ~0.5 s, which is no part of loading it)."""
    started = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - started
    del result
    return elapsed


def median_seconds(fn, repeats: int) -> float:
    """Median of ``repeats`` calls after one warm-up call (the first pays for kernel selection)."""
    fn()
    return statistics.median(seconds(fn) for _ in range(repeats))
