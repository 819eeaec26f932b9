"""The ``/metrics`` response, shared by ``MetricsServer`` and the ASGI/WSGI apps.

One renderer, one set of status codes and one gzip rule, so the three ways of
serving the metrics cannot drift apart.
"""

from __future__ import annotations

import logging
import zlib
from typing import NamedTuple

from .pipeline import MetricsDisabledError, get_pipeline, render_metrics_chunks

_log = logging.getLogger("tinywindow_otel")

TEXT = "text/plain; charset=utf-8"
ALLOW = "GET, HEAD"
# Exposition text is repetitive: level 1 already shrinks it ~19x, at a fifth of
# level 6's CPU (2.3 MB: 12 ms vs 65 ms, for 119 kB vs 98 kB).
_GZIP_LEVEL = 1


class Response(NamedTuple):
    status: int
    headers: list[tuple[str, str]]
    chunks: list[bytes]  # the body, written in order; for HEAD only its length is sent

    @property
    def length(self) -> int:
        return sum(map(len, self.chunks))


# The only two places the servers reach the metrics pipeline.

def prepare() -> None:
    """Build the pipeline now, raising a bad configuration, rather than at the first scrape."""
    get_pipeline()


def render() -> tuple[list[bytes], str]:
    """The exposition, as encoded pieces, and its content type."""
    return render_metrics_chunks()


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an ``Accept-Encoding`` value admits gzip (``gzip;q=0`` refuses it)."""
    if not accept_encoding:
        return False
    for coding in accept_encoding.split(","):
        name, _, params = coding.partition(";")
        if name.strip().lower() not in ("gzip", "x-gzip"):
            continue
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


def _gzip(chunks: list[bytes]) -> list[bytes]:
    compressor = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, 31)  # wbits 31: the gzip container
    out = [compressor.compress(chunk) for chunk in chunks]
    out.append(compressor.flush())
    return [piece for piece in out if piece]


def not_allowed() -> Response:
    return Response(405, [("Content-Type", TEXT), ("Allow", ALLOW)], [b"method not allowed\n"])


def metrics_response(method: str, accept_encoding: str | None = None) -> Response:
    """The response to ``method /metrics``; never raises."""
    if method not in ("GET", "HEAD"):
        return not_allowed()
    try:
        chunks, content_type = render()
    except MetricsDisabledError as exc:  # configuration, not a fault: say so, don't log
        return Response(503, [("Content-Type", TEXT)], [f"{exc}\n".encode()])
    except Exception:  # a broken collection must not kill the serving thread or task
        _log.exception("collecting metrics for a scrape failed")
        return Response(500, [("Content-Type", TEXT)], [b"collection failed\n"])
    headers = [("Content-Type", content_type), ("Vary", "Accept-Encoding")]
    if accepts_gzip(accept_encoding):
        chunks = _gzip(chunks)
        headers.append(("Content-Encoding", "gzip"))
    return Response(200, headers, chunks)
