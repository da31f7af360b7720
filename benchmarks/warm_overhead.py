"""Per-run flow overhead inside one long-lived process (a notebook or a script calling `run_spec` in a loop).

Alternates the plain work (`plain_guide.work`) with `run_spec(..., use_cache=False)` on the same spec, after
one warm-up of each, and prints the medians as JSON: the imports and the TF tracing caches are then paid,
and what is left is Prefect's own per-run work (API calls, task engine, result records, UI artifacts).
"""

from __future__ import annotations

import json
import statistics
import sys

import common  # noqa: F401
from common import best_of
from plain_guide import work

from flows.api import run_spec
from flows.spec.load import load_spec

ROUNDS = 7


def main(spec_path: str) -> None:
    spec = load_spec(spec_path)
    work(spec)
    run_spec(spec, use_cache=False)
    plain, flow, cached = [], [], []
    for _ in range(ROUNDS):
        plain.append(best_of(lambda: work(spec), 1))
        flow.append(best_of(lambda: run_spec(spec, use_cache=False), 1))
        cached.append(best_of(lambda: run_spec(spec), 1))
    print(json.dumps({"plain": statistics.median(plain), "flow": statistics.median(flow),
                      "cached": statistics.median(cached)}))


if __name__ == "__main__":
    main(sys.argv[1])
