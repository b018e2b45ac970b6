"""Helpers shared by the benchmark files."""

def median_seconds(benchmark):
    """The benchmark's median time, or None under --benchmark-disable (a smoke run)."""
    stats = getattr(benchmark, "stats", None)
    return None if stats is None else stats.stats.median
