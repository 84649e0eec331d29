"""Benchmarks: `task bench`, `task bench:<stage>`, `task chaos`, `task soak`."""
