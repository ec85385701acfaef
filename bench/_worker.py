"""Runs one case in a fresh interpreter: ``python -m bench._worker < spec.json``.

The spec names the metric module, the case and a tag from which the case derives every
OS object name it creates (so that the runner can sweep up after a case that crashed).
The result is printed as one line, ``RESULT_PREFIX`` followed by JSON.
"""

from __future__ import annotations

import importlib
import json
import sys
import traceback

from ._core import Case, Metric

RESULT_PREFIX = "BENCH-RESULT "


def main() -> int:
    """Read the spec from stdin, measure, print the result line."""
    spec = json.load(sys.stdin)
    try:
        module = importlib.import_module(spec["module"])
        metric: Metric = module.METRIC
        values = metric.measure(Case.from_json(spec["case"]), spec["tag"])
    except BaseException as exc:  # report any failure as data; the runner decides
        traceback.print_exc()
        print(RESULT_PREFIX + json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    print(RESULT_PREFIX + json.dumps({"values": values}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
