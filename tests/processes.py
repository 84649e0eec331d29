"""Run K2 services as real processes in tests (so kill -9 means kill -9).

The runner is bench.common's (one implementation for the tests and the benchmarks; the bench never
imports tests/): ServiceProcess(module, args, env, log_dir, name) with start/stop (SIGTERM)/kill
(SIGKILL of the process group)/running/output()/wait_http(url) and use as a `with` block; scrape(url).
"""

from __future__ import annotations

from bench.common import ServiceProcess, scrape

__all__ = ["ServiceProcess", "scrape"]
