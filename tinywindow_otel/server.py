"""The metrics endpoint: ``/metrics`` (and ``/healthz``) from a background thread.

    >>> from tinywindow_otel import MetricsServer
    >>> with MetricsServer(port=0) as server:
    ...     print(server.url)          # doctest: +SKIP
    http://127.0.0.1:43117/metrics

Hostile or broken clients cost little: each connection gets ``request_timeout``
seconds in all to send its request (TLS handshake and headers included, however
slowly the bytes drip), and at most ``max_connections`` are held at once; when
all are taken, the oldest one still sending its request makes room.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .config import ConfigurationError
from .endpoint import TEXT, Response, metrics_response, not_allowed, prepare
from .security import BasicAuth, TLSConfig

_log = logging.getLogger("tinywindow_otel")

DEFAULT_HOST = "127.0.0.1"  # P&L is sensitive: listen on loopback unless told otherwise
DEFAULT_PORT = 8000
DEFAULT_REQUEST_TIMEOUT = 10.0
DEFAULT_MAX_CONNECTIONS = 64
# socketserver's default of 5 drops SYNs when a few scrapers arrive together,
# and each dropped SYN costs the client a 1 s retransmit.
LISTEN_BACKLOG = 128
_POLL_INTERVAL = 0.2  # how often the accept loop checks deadlines and stop()


class MetricsServerError(OSError):
    """The metrics server could not start (e.g. the port is already in use)."""


def _abort(sock: socket.socket) -> None:
    # shutdown() (not close()) wakes the handler thread blocked in recv on this
    # socket; that thread closes it. The base-class call bypasses SSLSocket's
    # own shutdown(), which would drop the TLS object under the reading thread.
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by its thread


class _Handler(BaseHTTPRequestHandler):
    server_version = "tinywindow-otel"
    # Errors (400, 414, 431...) as plain text, like every other reply here.
    error_content_type = TEXT
    error_message_format = "Error code: %(code)d\nMessage: %(message)s\n"

    def setup(self) -> None:
        self._raw = self.request
        # A per-recv (and per-send) bound; the whole request is bounded by the
        # server's deadline. The TLS wrapper inherits it.
        self._raw.settimeout(self.server.tw_request_timeout)  # type: ignore[attr-defined]
        context = self.server.tw_ssl_context  # type: ignore[attr-defined]
        if context is not None:
            # The handshake runs here, in this connection's own thread, under
            # the connection's deadline: a client that connects and stalls
            # cannot hold up the accept loop (wrapping the listening socket would).
            self.request = self.server.tw_wrap(self._raw, context)  # type: ignore[attr-defined]
            self.request.do_handshake()
        super().setup()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            if self.server.tw_ssl_context is not None:  # type: ignore[attr-defined]
                self.request.close()

    def parse_request(self) -> bool:
        ok = super().parse_request()
        if ok:  # request line and headers are in: the read deadline no longer applies
            self.server.tw_request_read(self._raw)  # type: ignore[attr-defined]
        return ok

    def __getattr__(self, name: str):
        # Any method without a do_* handler (e.g. "FOO") is answered 405, like
        # POST, instead of http.server's 501 HTML page.
        if name.startswith("do_"):
            return self._not_allowed
        raise AttributeError(name)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            auth = self.server.tw_auth  # type: ignore[attr-defined]
            if auth is not None and not auth.check(self.headers.get("Authorization")):
                self._reply(Response(401, [
                    ("Content-Type", TEXT),
                    ("WWW-Authenticate", 'Basic realm="tinywindow-otel", charset="UTF-8"')], [b"unauthorized\n"]))
                return
            response = metrics_response(self.command, self.headers.get("Accept-Encoding"))
            self._reply(response)
        elif path == "/healthz":
            self._reply(Response(200, [("Content-Type", TEXT)], [b"ok\n"]))
        else:
            self._reply(Response(404, [("Content-Type", TEXT)],
                                 [b"not found: only /metrics and /healthz are served\n"]))

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def _not_allowed(self) -> None:
        self._reply(not_allowed())

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _not_allowed

    def _reply(self, response: Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(response.length))
        self.end_headers()
        if self.command != "HEAD":
            for chunk in response.chunks:
                self.wfile.write(chunk)

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        # Prometheus scrapes every few seconds: access logs would be noise.
        pass


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address, handler, *, ssl_context, auth: BasicAuth | None,
                 request_timeout: float, max_connections: int) -> None:
        self.tw_ssl_context = ssl_context
        self.tw_auth = auth
        self.tw_request_timeout = request_timeout
        self.tw_max_connections = max_connections
        self._conn_lock = threading.Lock()
        # Connections still sending their request: raw socket -> [deadline, socket
        # to abort] (the TLS wrapper once there is one). Insertion order is age order.
        self._reading: dict[socket.socket, list] = {}
        self._serving: set[socket.socket] = set()  # request read, being answered
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        with self._conn_lock:
            full = len(self._reading) + len(self._serving) >= self.tw_max_connections
            if full and self._reading:
                # The oldest connection still sending its request makes room: a
                # real scraper sends its request at once, a drip client never finishes.
                oldest = next(iter(self._reading))
                _abort(self._reading.pop(oldest)[1])
                full = False
            if not full:
                self._reading[request] = [time.monotonic() + self.tw_request_timeout, request]
        if full:  # every slot is answering a complete request: this one waits its turn elsewhere
            _log.debug("refusing metrics connection from %s: %d connections busy",
                       client_address, self.tw_max_connections)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def tw_wrap(self, raw: socket.socket, context):
        # Swapped under the lock so an abort never hits the detached raw socket.
        with self._conn_lock:
            wrapped = context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
            entry = self._reading.get(raw)
            if entry is not None:
                entry[1] = wrapped
        return wrapped

    def tw_request_read(self, raw: socket.socket) -> None:
        with self._conn_lock:
            if self._reading.pop(raw, None) is not None:
                self._serving.add(raw)

    def service_actions(self) -> None:
        # Runs in the accept loop at least every _POLL_INTERVAL: ends the
        # connections whose request is not in by their deadline.
        now = time.monotonic()
        with self._conn_lock:
            while self._reading:
                raw, (deadline, sock) = next(iter(self._reading.items()))
                if deadline > now:
                    break
                del self._reading[raw]
                _abort(sock)

    def shutdown_request(self, request) -> None:
        with self._conn_lock:
            self._reading.pop(request, None)
            self._serving.discard(request)
        super().shutdown_request(request)

    def server_close(self) -> None:
        super().server_close()
        with self._conn_lock:  # stalled clients are let go with the server
            for _, sock in self._reading.values():
                _abort(sock)
            self._reading.clear()

    def handle_error(self, request, client_address) -> None:
        # Failed handshakes, resets and timeouts are the client's problem:
        # one debug line, not a traceback on stderr per port scanner.
        _log.debug("metrics connection from %s failed", client_address, exc_info=True)


class _HTTPServerV6(_HTTPServer):
    address_family = socket.AF_INET6


class MetricsServer:
    """Serves ``/metrics`` on ``host:port`` from a background thread.

    ``port=0`` binds a free port; read it from ``.port`` after ``start()``.
    ``host`` must be an address or name: ``""`` is refused (``ConfigurationError``,
    a ``ValueError``) rather than taken to mean every interface; pass
    ``"0.0.0.0"`` or ``"::"`` for that.
    ``tls`` serves HTTPS (optionally requiring client certificates) and
    ``auth`` requires HTTP basic auth on ``/metrics``; when not given, both are
    read from the environment (``tinywindow_otel.security``). ``/healthz``
    stays open to plain GETs so container health checks need no secret.
    ``request_timeout`` bounds the time a connection may take to send its
    request (handshake included); ``max_connections`` bounds the connections
    (and threads) held at once. Scrapers that send ``Accept-Encoding: gzip``
    get a gzip body.
    """

    def __init__(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *,
                 tls: TLSConfig | None = None, auth: BasicAuth | None = None,
                 request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        if not isinstance(host, str) or not host.strip():
            raise ConfigurationError(
                f"MetricsServer host {host!r} is empty: the socket layer would listen on every interface. "
                f"Pass {DEFAULT_HOST!r} for loopback, or '0.0.0.0' / '::' to expose the metrics on purpose")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigurationError(f"MetricsServer port must be an int from 0 to 65535 (0: any free port), "
                                     f"got {port!r}")
        if not request_timeout > 0:
            raise ConfigurationError(f"MetricsServer request_timeout must be > 0 seconds, got {request_timeout!r}")
        if isinstance(max_connections, bool) or not isinstance(max_connections, int) or max_connections < 1:
            raise ConfigurationError(f"MetricsServer max_connections must be an int >= 1, got {max_connections!r}")
        self.host = host
        self._requested_port = port
        self.request_timeout = float(request_timeout)
        self.max_connections = max_connections
        self.tls = tls if tls is not None else TLSConfig.from_env()
        self.auth = auth if auth is not None else BasicAuth.from_env()
        # Load the files now: a wrong path fails at construction, naming it.
        self._ssl_context = self.tls.context() if self.tls is not None else None
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        # Held for the whole of start() and stop(), port release included: a
        # start() racing a stop() on another thread must find the port free.
        self._lock = threading.RLock()

    @property
    def port(self) -> int:
        """The bound port once started (the requested one before)."""
        httpd = self._httpd
        return httpd.server_address[1] if httpd is not None else self._requested_port

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
            prepare()
            server_class = _HTTPServerV6 if ":" in self.host else _HTTPServer
            try:
                httpd = server_class(
                    (self.host, self._requested_port), _Handler, ssl_context=self._ssl_context, auth=self.auth,
                    request_timeout=self.request_timeout, max_connections=self.max_connections)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    reason = "address already in use"
                else:
                    reason = exc.strerror or str(exc)
                raise MetricsServerError(
                    exc.errno, f"cannot serve metrics on {self.host}:{self._requested_port}: {reason}"
                ) from exc
            thread = threading.Thread(
                target=httpd.serve_forever, kwargs={"poll_interval": _POLL_INTERVAL},
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
            if httpd is None:
                return
            httpd.shutdown()
            httpd.server_close()
            self._httpd = self._thread = None
            if thread is not None:
                thread.join(timeout)

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
