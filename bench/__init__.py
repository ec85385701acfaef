"""aplock's benchmark harness: ``python -m bench [--quick] [--json PATH]``.

Every metric lives in a module ``bench/<name>_bench.py`` that defines
``METRIC = bench._core.Metric(...)``; ``METRIC_MODULES`` lists the ones a run measures,
in order. To add a metric, write such a module and add its name here.
"""

from __future__ import annotations

METRIC_MODULES: tuple[str, ...] = (
    "bench.sync_uncontended_bench",
    "bench.try_held_bench",
    "bench.handoff_bench",
    "bench.contended_bench",
    "bench.async_uncontended_bench",
    "bench.async_tasks_bench",
    "bench.cancellation_bench",
    "bench.import_time_bench",
    "bench.semaphore_bench",
    "bench.fairness_bench",
)
