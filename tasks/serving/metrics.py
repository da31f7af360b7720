"""What `/metrics` shows, in Prometheus's text format (written by `prometheus_client`, on a registry of the
server's own, so two servers in one process never mix their counts).

Label values are only names the server serves (a model name, a label, an API), never text from a request: a
request for an unknown model is counted under `model=""`, so random URLs cannot grow the series without bound.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._series: dict[tuple, tuple] = {}
        r = self.registry
        self.requests = Counter("trainflow_serving_requests", "HTTP requests answered, by model, API and status code",
                                ["model", "api", "code"], registry=r)
        self.errors = Counter("trainflow_serving_request_errors",
                              "Requests answered with an error (4xx, 5xx), by model, API and status code",
                              ["model", "api", "code"], registry=r)
        self.latency = Histogram("trainflow_serving_request_seconds", "Time from a request's arrival to its answer",
                                 ["model", "api"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_rows = Histogram("trainflow_serving_batch_rows", "Rows per model call", ["model"],
                                    buckets=ROW_BUCKETS, registry=r)
        self.batch_requests = Histogram("trainflow_serving_batch_requests", "Requests answered by one model call",
                                        ["model"], buckets=ROW_BUCKETS, registry=r)
        self.version = Gauge("trainflow_serving_version", "The version number each served label answers with",
                             ["model", "label"], registry=r)
        self.swaps = Counter("trainflow_serving_swaps", "Switches to a new version after a label moved",
                             ["model", "label"], registry=r)
        self.swap_failures = Counter("trainflow_serving_swap_failures",
                                     "Versions a label moved to that failed their check and were not served",
                                     ["model", "label"], registry=r)

    def answered(self, model: str, api: str, code: int, seconds: float) -> None:
        series = self._series.get((model, api, code))
        if series is None:  # the labels looked up once per kind of answer (a few per model), not per request
            series = self._series[model, api, code] = (
                self.requests.labels(model, api, str(code)),
                self.errors.labels(model, api, str(code)) if code >= 400 else None, self.latency.labels(model, api))
        requests, errors, latency = series
        requests.inc()
        if errors is not None:
            errors.inc()
        latency.observe(seconds)

    def batched(self, model: str, rows: int, requests: int) -> None:
        self.batch_rows.labels(model).observe(rows)
        self.batch_requests.labels(model).observe(requests)

    def render(self) -> bytes:
        return generate_latest(self.registry)
