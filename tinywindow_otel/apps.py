"""``/metrics`` inside your own web server: an ASGI app and a WSGI app.

They serve the same body as ``MetricsServer`` (the same renderer, status
codes and gzip rule); TLS and authentication are the host server's job.

    from fastapi import FastAPI
    from tinywindow_otel import make_asgi_app

    app = FastAPI()
    app.add_route("/metrics", make_asgi_app())   # answers /metrics itself, no 307

    # Starlette: Starlette(routes=[Route("/metrics", make_asgi_app()), ...])

``app.mount("/metrics", ...)`` works too, but Starlette's router only hands a
mount the paths below it: a bare ``/metrics`` is redirected to ``/metrics/``
before the app is reached, and Prometheus does not follow that redirect.
Dispatchers that mount by prefix (hypercorn's ``DispatcherMiddleware``) serve
the mount path itself. The apps answer whatever path they are routed, like
prometheus_client's, and acknowledge ASGI ``lifespan`` events.

    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    from tinywindow_otel import make_wsgi_app

    flask_app.wsgi_app = DispatcherMiddleware(flask_app.wsgi_app, {"/metrics": make_wsgi_app()})
"""

from __future__ import annotations

from http import HTTPStatus

from .endpoint import metrics_response


def _status_line(status: int) -> str:
    return f"{status} {HTTPStatus(status).phrase}"


class _ASGIApp:
    # A class, not a function: Starlette's Route treats a plain function as a
    # request/response endpoint, and an instance as the ASGI app it is.

    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            # Servers and middlewares (e.g. a dispatcher) send lifespan events to
            # every app they host; nothing to set up, but the protocol is answered.
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if kind != "http":  # a websocket: refuse it (closing before accepting answers 403)
            await receive()
            await send({"type": "websocket.close", "code": 1008})
            return
        accept_encoding = None
        for name, value in scope.get("headers") or ():
            if name.lower() == b"accept-encoding":
                accept_encoding = value.decode("latin-1")
        method = scope.get("method", "GET")
        # Rendered inline, as prometheus_client's app does: a scrape costs
        # milliseconds and an executor would tie the app to asyncio.
        response = metrics_response(method, accept_encoding)
        headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in response.headers]
        headers.append((b"content-length", str(response.length).encode("ascii")))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        chunks = [] if method == "HEAD" else response.chunks
        for chunk in chunks[:-1]:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": chunks[-1] if chunks else b""})


class _WSGIApp:
    def __call__(self, environ, start_response):
        method = environ.get("REQUEST_METHOD", "GET")
        response = metrics_response(method, environ.get("HTTP_ACCEPT_ENCODING"))
        start_response(_status_line(response.status),
                       [*response.headers, ("Content-Length", str(response.length))])
        return [] if method == "HEAD" else response.chunks


def make_asgi_app() -> _ASGIApp:
    """An ASGI app serving the metrics exposition (GET/HEAD; lifespan answered)."""
    return _ASGIApp()


def make_wsgi_app() -> _WSGIApp:
    """A WSGI app serving the metrics exposition (GET/HEAD)."""
    return _WSGIApp()
