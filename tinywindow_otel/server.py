"""The metrics endpoint: ``/metrics`` (and ``/healthz``) from a background thread.

    >>> from tinywindow_otel import MetricsServer
    >>> with MetricsServer(port=0) as server:
    ...     print(server.url)          # doctest: +SKIP
    http://127.0.0.1:43117/metrics
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .pipeline import MetricsDisabledError, get_pipeline

_log = logging.getLogger("tinywindow_otel")

DEFAULT_HOST = "127.0.0.1"  # P&L is sensitive: listen on loopback unless told otherwise
DEFAULT_PORT = 8000


class MetricsServerError(OSError):
    """The metrics server could not start (e.g. the port is already in use)."""


class _Handler(BaseHTTPRequestHandler):
    server_version = "tinywindow-otel"
    # A slow or stalled client gives up its thread after this long; other
    # scrapes are served by their own threads meanwhile.
    timeout = 10

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            try:
                body, content_type = get_pipeline().render(self.headers.get("Accept"))
            except MetricsDisabledError as exc:  # configuration, not a fault: say so, don't log
                self._reply(503, f"{exc}\n".encode(), "text/plain; charset=utf-8")
                return
            except Exception:  # a broken collection must not kill the server thread
                _log.exception("collecting metrics for a scrape failed")
                self._reply(500, b"collection failed\n", "text/plain; charset=utf-8")
                return
            self._reply(200, body, content_type)
        elif path == "/healthz":
            self._reply(200, b"ok\n", "text/plain; charset=utf-8")
        else:
            self._reply(404, b"not found: only /metrics and /healthz are served\n", "text/plain; charset=utf-8")

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        # Prometheus scrapes every few seconds: access logs would be noise.
        pass


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _HTTPServerV6(_HTTPServer):
    address_family = socket.AF_INET6


class MetricsServer:
    """Serves ``/metrics`` on ``host:port`` from a background thread.

    ``port=0`` binds a free port; read it from ``.port`` after ``start()``.
    """

    def __init__(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
        self.host = host
        self._requested_port = port
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        """The bound port once started (the requested one before)."""
        return self._httpd.server_address[1] if self._httpd is not None else self._requested_port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def start(self) -> MetricsServer:
        """Bind and serve in a background thread; returns at once. Idempotent."""
        with self._lock:
            if self._httpd is not None:
                return self
            get_pipeline()  # build the provider before the first scrape arrives
            server_class = _HTTPServerV6 if ":" in self.host else _HTTPServer
            try:
                httpd = server_class((self.host, self._requested_port), _Handler)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    reason = "address already in use"
                else:
                    reason = exc.strerror or str(exc)
                raise MetricsServerError(
                    exc.errno, f"cannot serve metrics on {self.host}:{self._requested_port}: {reason}"
                ) from exc
            thread = threading.Thread(
                target=httpd.serve_forever, kwargs={"poll_interval": 0.2},
                name=f"tinywindow-otel-metrics-{httpd.server_address[1]}", daemon=True,
            )
            thread.start()
            self._httpd, self._thread = httpd, thread
            _log.info("serving metrics on %s", self.url)
            return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and release the port. Safe to call when not running."""
        with self._lock:
            httpd, thread = self._httpd, self._thread
            self._httpd = self._thread = None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout)

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
