"""The ``/metrics`` response, shared by ``MetricsServer`` and the ASGI/WSGI apps.

One renderer, one set of status codes and one gzip rule, so the three ways of
serving the metrics cannot drift apart.
"""

from __future__ import annotations

import gzip
import logging
from typing import NamedTuple

from .pipeline import MetricsDisabledError, get_pipeline

_log = logging.getLogger("tinywindow_otel")

TEXT = "text/plain; charset=utf-8"
ALLOW = "GET, HEAD"
# Exposition text is repetitive: level 1 already shrinks it ~19x, at a fifth of
# level 6's CPU (2.3 MB: 12 ms vs 65 ms, for 119 kB vs 98 kB).
_GZIP_LEVEL = 1


class Response(NamedTuple):
    status: int
    headers: list[tuple[str, str]]
    body: bytes  # sent for GET; for HEAD only its length is


def pipeline():
    """The metrics pipeline: the only place the servers reach it."""
    return get_pipeline()


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


def not_allowed() -> Response:
    return Response(405, [("Content-Type", TEXT), ("Allow", ALLOW)], b"method not allowed\n")


def metrics_response(method: str, accept_encoding: str | None = None) -> Response:
    """The response to ``method /metrics``; never raises."""
    if method not in ("GET", "HEAD"):
        return not_allowed()
    try:
        body, content_type = pipeline().render()
    except MetricsDisabledError as exc:  # configuration, not a fault: say so, don't log
        return Response(503, [("Content-Type", TEXT)], f"{exc}\n".encode())
    except Exception:  # a broken collection must not kill the serving thread or task
        _log.exception("collecting metrics for a scrape failed")
        return Response(500, [("Content-Type", TEXT)], b"collection failed\n")
    headers = [("Content-Type", content_type), ("Vary", "Accept-Encoding")]
    if accepts_gzip(accept_encoding):
        body = gzip.compress(body, compresslevel=_GZIP_LEVEL)
        headers.append(("Content-Encoding", "gzip"))
    return Response(200, headers, body)
