"""make_asgi_app() and make_wsgi_app() under real servers (uvicorn with Starlette/FastAPI routing,
hypercorn with its lifespan-forwarding dispatcher, waitress with and without Flask, wsgiref with its
WSGI validator), all on port 0, compared with MetricsServer's body."""

from __future__ import annotations

import gzip
import socket
import threading
import urllib.request
from contextlib import contextmanager
from wsgiref.simple_server import WSGIRequestHandler, make_server
from wsgiref.validate import validator

import pytest
import requests
from helpers import parse, sample_value, wait_until

from tinywindow_otel import MetricsServer, make_asgi_app, make_wsgi_app
from tinywindow_otel.metrics import REGISTRY


def record_something() -> None:
    REGISTRY.by_attr("trades_total").labels("filled", "BTC/USDT").inc(3)
    REGISTRY.by_attr("trade_pnl_usd").observe(-12.5)


def catalog_families(text: str) -> dict:
    # The catalog's families only: process-level families may move between two scrapes.
    return {name: family for name, family in parse(text).items() if name.startswith("tinywindow_")}


def reference() -> requests.Response:
    with MetricsServer(port=0) as server:
        return requests.get(server.url, headers={"Accept-Encoding": "identity"}, timeout=5)


@contextmanager
def uvicorn_serving(app, lifespan: str = "on"):
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, lifespan=lifespan, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), timeout=20, what="uvicorn to start")
        assert server.started, "uvicorn did not start (lifespan startup failed?)"
        yield server, f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()
    assert not thread.is_alive(), "uvicorn did not shut down"


@contextmanager
def hypercorn_serving(app):
    """Hypercorn on a socket bound to port 0 and handed over by file descriptor."""
    import asyncio

    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]  # hypercorn owns (and closes) the socket from here
    config.accesslog = config.errorlog = None
    state: dict = {}
    ready = threading.Event()

    def run() -> None:
        async def main() -> None:
            state["loop"], state["stop"] = asyncio.get_running_loop(), asyncio.Event()
            ready.set()
            await serve(app, config, shutdown_trigger=state["stop"].wait)

        try:
            asyncio.run(main())
        except asyncio.CancelledError as exc:
            # Hypercorn cancels the dispatcher's lifespan task group once every app has
            # acknowledged shutdown; on some Pythons that cancellation escapes serve().
            if not state.get("stopping"):
                state["error"] = exc
        except BaseException as exc:  # noqa: BLE001 - reported below
            state["error"] = exc
        finally:
            ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        assert ready.wait(timeout=20) and "error" not in state, state.get("error")
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: requests.get(base + "/metrics", timeout=2), timeout=20, what="hypercorn to serve")
        yield base
    finally:
        if "loop" in state:
            state["stopping"] = True
            state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join(timeout=20)
    assert not thread.is_alive(), "hypercorn did not shut down"
    assert "error" not in state, state.get("error")


@contextmanager
def wsgiref_serving(app):
    class Quiet(WSGIRequestHandler):
        def log_message(self, *args) -> None:
            pass

    httpd = make_server("127.0.0.1", 0, validator(app), handler_class=Quiet)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@contextmanager
def waitress_serving(app):
    from waitress.server import create_server

    server = create_server(app, host="127.0.0.1", port=0, threads=2)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        # Closed from its own loop thread: closing from here races its select().
        server.trigger.pull_trigger(server.close)
        thread.join(timeout=10)
    assert not thread.is_alive(), "waitress did not stop"


def check_metrics_endpoint(url: str) -> None:
    """Same body as MetricsServer, gzip on request, HEAD, 405 for other methods."""
    record_something()
    ref = reference()
    expected = catalog_families(ref.text)
    plain = requests.get(url, headers={"Accept-Encoding": "identity"}, timeout=5, allow_redirects=False)
    assert plain.status_code == 200, (plain.status_code, plain.headers)
    assert plain.headers["Content-Type"] == ref.headers["Content-Type"]
    assert plain.headers["Content-Type"].startswith("text/plain;")
    assert "Content-Encoding" not in plain.headers
    assert catalog_families(plain.text) == expected
    assert sample_value(parse(plain.text), "tinywindow_trades_total", status="filled", symbol="BTC/USDT") == 3
    assert sample_value(parse(plain.text), "tinywindow_trade_pnl_usd_sum") == -12.5

    request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=5) as response:  # urllib does not decompress: raw bytes
        assert response.headers["Content-Encoding"] == "gzip"
        raw = response.read()
    assert catalog_families(gzip.decompress(raw).decode()) == expected

    head = requests.head(url, timeout=5, allow_redirects=False)
    assert head.status_code == 200 and head.content == b""
    for method in ("POST", "DELETE", "FOO"):
        refused = requests.request(method, url, timeout=5, allow_redirects=False)
        assert refused.status_code == 405 and refused.headers["Allow"] == "GET, HEAD", method


# --- ASGI -------------------------------------------------------------------------------------


def test_asgi_app_served_by_uvicorn_with_lifespan_on():
    with uvicorn_serving(make_asgi_app(), lifespan="on") as (server, base):
        check_metrics_endpoint(base + "/metrics")
    # The app answered lifespan.startup and lifespan.shutdown (uvicorn's own record of it).
    assert not server.lifespan.startup_failed and not server.lifespan.shutdown_failed
    assert not server.lifespan.error_occurred
    assert server.lifespan.startup_event.is_set() and server.lifespan.shutdown_event.is_set()


def test_asgi_app_as_a_starlette_route_answers_the_path_itself_without_a_redirect():
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    async def home(request):
        return PlainTextResponse("home")

    app = Starlette(routes=[Route("/", home), Route("/metrics", make_asgi_app()),
                            Mount("/mounted/metrics", app=make_asgi_app())])
    with uvicorn_serving(app) as (_, base):
        check_metrics_endpoint(base + "/metrics")
        # Under a Mount the app answers the paths Starlette hands it (the mount's children).
        mounted = requests.get(base + "/mounted/metrics/", timeout=5, allow_redirects=False)
        assert mounted.status_code == 200
        assert catalog_families(mounted.text) == catalog_families(reference().text)
        assert requests.get(base + "/", timeout=5).text == "home"


def test_asgi_app_in_fastapi_with_add_route():
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/orders")
    def orders() -> dict:
        return {"open": 0}

    app.add_route("/metrics", make_asgi_app())
    with uvicorn_serving(app) as (_, base):
        check_metrics_endpoint(base + "/metrics")
        assert requests.get(base + "/orders", timeout=5).json() == {"open": 0}


def dispatcher_app():
    """A dispatcher that forwards lifespan to every mounted app (where prometheus_client's ASGI app fails)."""
    from hypercorn.middleware.dispatcher import AsyncioDispatcherMiddleware
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def home(request):
        return PlainTextResponse("home")

    return AsyncioDispatcherMiddleware({"/metrics": make_asgi_app(), "": Starlette(routes=[Route("/", home)])})


def test_asgi_app_mounted_by_a_lifespan_forwarding_dispatcher_under_hypercorn():
    with hypercorn_serving(dispatcher_app()) as base:
        check_metrics_endpoint(base + "/metrics")  # the mount path itself: no redirect
        assert requests.get(base + "/", timeout=5).text == "home"


def test_asgi_app_mounted_by_a_dispatcher_under_uvicorn_completes_lifespan():
    with uvicorn_serving(dispatcher_app(), lifespan="on") as (server, base):
        check_metrics_endpoint(base + "/metrics")
    assert server.lifespan.startup_event.is_set() and server.lifespan.shutdown_event.is_set()
    assert not server.lifespan.error_occurred


def test_asgi_app_refuses_websockets_and_survives():
    import asyncio

    app = make_asgi_app()
    sent: list[dict] = []

    async def receive():
        return {"type": "websocket.connect"}

    async def send(message):
        sent.append(message)

    asyncio.run(app({"type": "websocket", "path": "/metrics", "headers": []}, receive, send))
    assert sent == [{"type": "websocket.close", "code": 1008}]


# --- WSGI -------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Unknown REQUEST_METHOD")
@pytest.mark.parametrize("serving", [wsgiref_serving, waitress_serving], ids=["wsgiref-validated", "waitress"])
def test_wsgi_app_under_a_real_wsgi_server(serving):
    with serving(make_wsgi_app()) as base:
        check_metrics_endpoint(base + "/metrics")


def test_wsgi_app_mounted_beside_a_flask_app():
    """prometheus_client's Flask recipe: werkzeug's dispatcher sends /metrics to the app."""
    from flask import Flask
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    flask_app = Flask("orders")

    @flask_app.get("/orders")
    def orders():
        return {"open": 0}

    flask_app.wsgi_app = DispatcherMiddleware(flask_app.wsgi_app, {"/metrics": make_wsgi_app()})  # type: ignore[method-assign]
    with waitress_serving(flask_app) as base:
        check_metrics_endpoint(base + "/metrics")
        assert requests.get(base + "/orders", timeout=5).json() == {"open": 0}


def test_a_failing_collection_answers_500_and_the_app_keeps_serving(monkeypatch):
    from tinywindow_otel import endpoint

    def broken():
        raise RuntimeError("collector exploded")

    with wsgiref_serving(make_wsgi_app()) as base:
        monkeypatch.setattr(endpoint, "render", broken)
        response = requests.get(base + "/metrics", timeout=5)
        assert response.status_code == 500 and "collector exploded" not in response.text
        monkeypatch.undo()
        assert requests.get(base + "/metrics", timeout=5).status_code == 200
