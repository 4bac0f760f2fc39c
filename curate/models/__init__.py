"""Model helpers shared by backends, tests and benchmarks (no pipeline logic)."""
