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
from .security import BasicAuth, TLSConfig

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

    def setup(self) -> None:
        # The TLS handshake runs here, in this connection's own thread, under
        # the read timeout: a client that connects and stalls cannot hold up
        # the accept loop (wrapping the listening socket would).
        context = self.server.tw_ssl_context  # type: ignore[attr-defined]
        if context is not None:
            self.request.settimeout(self.timeout)
            raw = self.request
            self.request = context.wrap_socket(raw, server_side=True)
        super().setup()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            if self.server.tw_ssl_context is not None:  # type: ignore[attr-defined]
                self.request.close()

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            auth = self.server.tw_auth  # type: ignore[attr-defined]
            if auth is not None and not auth.check(self.headers.get("Authorization")):
                self._reply(401, b"unauthorized\n", "text/plain; charset=utf-8",
                            {"WWW-Authenticate": 'Basic realm="tinywindow-otel", charset="UTF-8"'})
                return
            try:
                body, content_type = get_pipeline().render()
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

    def _not_allowed(self) -> None:
        self._reply(405, b"method not allowed\n", "text/plain; charset=utf-8", {"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _not_allowed

    def _reply(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
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
    tw_ssl_context = None
    tw_auth: BasicAuth | None = None

    def handle_error(self, request, client_address) -> None:
        # Failed handshakes, resets and timeouts are the client's problem:
        # one debug line, not a traceback on stderr per port scanner.
        _log.debug("metrics connection from %s failed", client_address, exc_info=True)


class _HTTPServerV6(_HTTPServer):
    address_family = socket.AF_INET6


class MetricsServer:
    """Serves ``/metrics`` on ``host:port`` from a background thread.

    ``port=0`` binds a free port; read it from ``.port`` after ``start()``.
    ``tls`` serves HTTPS (optionally requiring client certificates) and
    ``auth`` requires HTTP basic auth on ``/metrics``; when not given, both are
    read from the environment (``tinywindow_otel.security``). ``/healthz``
    stays open to plain GETs so container health checks need no secret.
    """

    def __init__(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *,
                 tls: TLSConfig | None = None, auth: BasicAuth | None = None) -> None:
        self.host = host
        self._requested_port = port
        self.tls = tls if tls is not None else TLSConfig.from_env()
        self.auth = auth if auth is not None else BasicAuth.from_env()
        # Load the files now: a wrong path fails at construction, naming it.
        self._ssl_context = self.tls.context() if self.tls is not None else None
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
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://{host}:{self.port}/metrics"

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
            httpd.tw_ssl_context = self._ssl_context
            httpd.tw_auth = self.auth
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
