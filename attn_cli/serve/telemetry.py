"""Prometheus metrics of one server (its own registry, so several apps can live in one process).

Exposed at ``GET /metrics`` in the Prometheus text format:

* ``attn_requests_total{route, status}`` and ``attn_request_seconds{route}`` (a histogram);
  ``route`` is a known route or ``other`` (so random paths cannot grow the label set);
* ``attn_batch_texts{model}`` and ``attn_batch_requests{model}``: texts and requests per batch
  (histograms; a batch of several requests is batching across requests at work);
* ``attn_queue_depth{model}``: requests waiting;
* ``attn_tokens_total{model, side}`` (source and output tokens) and ``attn_tokens_per_second{model}``
  (source + output tokens of the last batch over its time).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from attn_cli.serve.batcher import BatchStats

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServeMetrics:
    """The counters, gauges and histograms above, and their text exposition."""

    def __init__(self, routes: set[str]) -> None:
        self.routes = routes
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter("attn_requests", "HTTP requests by route and status",
                                ["route", "status"], registry=r)
        self.latency = Histogram("attn_request_seconds", "HTTP request latency (seconds)", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.batch_texts = Histogram("attn_batch_texts", "Texts per inference batch", ["model"],
                                     buckets=SIZE_BUCKETS, registry=r)
        self.batch_requests = Histogram("attn_batch_requests", "Requests per inference batch",
                                        ["model"], buckets=SIZE_BUCKETS, registry=r)
        self.batch_seconds = Histogram("attn_batch_seconds", "Inference time per batch (seconds)",
                                       ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue = Gauge("attn_queue_depth", "Requests waiting for the model's worker", ["model"],
                           registry=r)
        self.tokens = Counter("attn_tokens", "Tokens processed (source and output)",
                              ["model", "side"], registry=r)
        self.tokens_per_second = Gauge("attn_tokens_per_second",
                                       "Source + output tokens per second of the last batch", ["model"],
                                       registry=r)
        self._last_output: dict[str, int] = {}

    def route(self, path: str) -> str:
        """The route label for a request path."""
        if path in self.routes:
            return path
        folder = path[:path.find("/", 1)] if path.count("/") > 1 else None  # "/static/app.js" -> "/static"
        return folder if folder in self.routes else "other"

    def request(self, path: str, status: int, seconds: float) -> None:
        route = self.route(path)
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def output_tokens(self, model: str, n: int) -> None:
        """Called by the runner after each batch, before the batch's stats arrive."""
        self.tokens.labels(model, "output").inc(n)
        self._last_output[model] = n

    def batch(self, model: str, stats: BatchStats) -> None:
        self.batch_texts.labels(model).observe(stats.texts)
        self.batch_requests.labels(model).observe(stats.jobs)
        self.batch_seconds.labels(model).observe(stats.seconds)
        self.tokens.labels(model, "source").inc(stats.tokens)
        if stats.seconds > 0:
            done = stats.tokens + self._last_output.pop(model, 0)
            self.tokens_per_second.labels(model).set(done / stats.seconds)

    def depth(self, model: str, n: int) -> None:
        self.queue.labels(model).set(n)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
