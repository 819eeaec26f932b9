"""A loopback HTTP proxy in front of a scenario driver's /metrics, to fail scrapes on purpose.

Prometheus scrapes the proxy, whose address stays the same while the driver
behind it is restarted (a new process on a new port): exactly what Prometheus
sees when an app restarts. ``fail_next(n)`` answers the next ``n`` scrapes
with HTTP 500; with no backend every scrape gets 503.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ScrapeProxy:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.backend: str | None = None
        self.scrapes = 0
        self.failed = 0
        self._fail = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                status, body, content_type = proxy._answer(self.path)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args) -> None:  # noqa: A002
                pass

        self._httpd = ThreadingHTTPServer((host, 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    @property
    def target(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"{host}:{port}"

    def start(self) -> ScrapeProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def fail_next(self, count: int = 1) -> int:
        """Answer the next ``count`` scrapes with HTTP 500; returns the number of failures so far."""
        with self._lock:
            self._fail += count
            return self.failed

    def _answer(self, path: str) -> tuple[int, bytes, str]:
        with self._lock:
            self.scrapes += 1
            if self._fail:
                self._fail -= 1
                self.failed += 1
                return 500, b"injected failure\n", "text/plain"
            backend = self.backend
        if backend is None:
            return 503, b"restarting\n", "text/plain"
        try:
            with urllib.request.urlopen(f"{backend}{path}", timeout=5) as response:
                return response.status, response.read(), response.headers.get("Content-Type", "text/plain")
        except (urllib.error.URLError, OSError) as exc:
            return 502, f"backend unreachable: {exc}\n".encode(), "text/plain"
