"""Benchmarks that need no network: `emkit bench judge` runs the API judge against emkit's
loopback OpenAI server (see docs/providers.md for measured numbers)."""

from emkit.bench.judge import GOAL_RATIO, bench_items, bench_judge

__all__ = ["GOAL_RATIO", "bench_items", "bench_judge"]
