"""A real OTLP/HTTP metrics receiver for tests: stdlib HTTP server + protobuf decoding.

It decodes every POST to /v1/metrics as an ``ExportMetricsServiceRequest``
(the OTLP wire format, package ``opentelemetry-proto``) and keeps the
requests, so tests assert on exactly what a collector would receive.
"""

from __future__ import annotations

import gzip
import math
import socket
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from helpers import wait_until
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

from tinywindow_otel.testing import reset


class OTLPReceiver:
    def __init__(self) -> None:
        self.requests: list[tuple[dict, ExportMetricsServiceRequest]] = []
        self.refused = 0  # requests answered with refuse_with
        self.refuse_with: int | None = None  # an HTTP status to answer instead of accepting (a failing collector)
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != "/v1/metrics":
                    self.send_response(404)
                    self.end_headers()
                    return
                if receiver.refuse_with is not None:
                    with receiver._cond:
                        receiver.refused += 1
                    self.send_response(receiver.refuse_with)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                request = ExportMetricsServiceRequest()
                request.ParseFromString(body)
                with receiver._cond:
                    receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, request))
                    receiver._cond.notify_all()
                payload = ExportMetricsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> OTLPReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def wait_for(self, predicate, timeout: float = 10.0):
        """Block until ``predicate(requests)`` is truthy; fail after ``timeout`` seconds."""
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self.requests), timeout):
                raise AssertionError(f"OTLP receiver: condition not met within {timeout}s "
                                     f"({len(self.requests)} request(s) received)")
            return predicate(self.requests)


class Blackhole:
    """A TCP endpoint that accepts connections and never answers: a hung collector."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.connected = threading.Event()
        self._conns: list[socket.socket] = []
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            self.connected.set()

    def close(self) -> None:
        self._closed = True
        for conn in self._conns:
            conn.close()
        self._sock.close()


# --- decoding -------------------------------------------------------------------


def export_threads() -> list[threading.Thread]:
    """The OTel SDK's periodic export threads still alive in this process."""
    return [t for t in threading.enumerate() if t.name == "OtelPeriodicExportingMetricReader" and t.is_alive()]


def reset_after_pushes() -> None:
    """``testing.reset()``, then again once every export thread has ended.

    An export abandoned by a bounded shutdown (hung collector) ends once its
    collector is gone; until then it may count its failure in the registry the
    next test starts from.
    """
    reset()
    wait_until(lambda: not export_threads(), timeout=15, interval=0.05, what="abandoned export threads to end")
    reset()


def attrs(key_values) -> dict:
    out = {}
    for kv in key_values:
        value = kv.value
        out[kv.key] = getattr(value, value.WhichOneof("value"))
    return out


def resource_of(request: ExportMetricsServiceRequest) -> dict:
    return attrs(request.resource_metrics[0].resource.attributes)


def metrics_of(request: ExportMetricsServiceRequest) -> dict:
    """{metric name: Metric proto} over every resource and scope of one request."""
    out = {}
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                out[metric.name] = metric
    return out


def point(metric, **labels):
    """The one data point of ``metric`` with exactly these attributes."""
    data = getattr(metric, metric.WhichOneof("data"))
    found = [p for p in data.data_points if attrs(p.attributes) == labels]
    assert len(found) == 1, f"{metric.name}{labels}: {len(found)} matching points"
    return found[0]


def as_prometheus_samples(request: ExportMetricsServiceRequest) -> dict:
    """One OTLP request as {(sample name, labels): value}, mapped the way Prometheus exposes it.

    Counters gain ``_total`` (as ``MetricSpec.exposed_name``); histogram buckets
    become cumulative ``_bucket{le}`` samples plus ``_sum``/``_count``.
    ``le`` is kept as a float so "10000.0" and "1e4" compare equal.
    """
    samples = {}
    for name, metric in metrics_of(request).items():
        kind = metric.WhichOneof("data")
        exposed = name + "_total" if kind == "sum" and metric.sum.is_monotonic and not name.endswith("_total") else name
        for p in getattr(metric, kind).data_points:
            labels = attrs(p.attributes)
            if kind == "histogram":
                running = 0
                for bound, count in zip([*p.explicit_bounds, math.inf], p.bucket_counts):
                    running += count
                    samples[(name + "_bucket", frozenset({**labels, "le": bound}.items()))] = float(running)
                samples[(name + "_sum", frozenset(labels.items()))] = p.sum
                samples[(name + "_count", frozenset(labels.items()))] = float(p.count)
            else:
                value = p.as_double if p.WhichOneof("value") == "as_double" else float(p.as_int)
                samples[(exposed, frozenset(labels.items()))] = value
    return samples


def scrape_as_samples(families: dict) -> dict:
    """A parsed /metrics scrape in the same shape as ``as_prometheus_samples``."""
    samples = {}
    for family in families.values():
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            labels = dict(s.labels)
            if "le" in labels:
                labels["le"] = float(labels["le"])
            samples[(s.name, frozenset(labels.items()))] = s.value
    return samples
