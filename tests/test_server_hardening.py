"""MetricsServer under hostile or careless callers: slow clients, connection floods,
simultaneous scrapers, odd methods, racing start/stop, an empty host. Loopback only."""

from __future__ import annotations

import gzip
import http.client
import resource
import socket
import statistics
import threading
import time
import urllib.request

import pytest
import requests
from helpers import free_port, parse, sample_value, wait_until

from tinywindow_otel import ConfigurationError, MetricsServer, MetricsServerError
from tinywindow_otel.metrics import REGISTRY
from tinywindow_otel.server import DEFAULT_MAX_CONNECTIONS

DRIP_HEAD = b"GET /metrics HTTP/1.1\r\nHost: x\r\n"  # headers never finished


def handler_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.endswith("(process_request_thread)"))


def record_something() -> None:
    REGISTRY.by_attr("trades_total").labels("filled", "BTC/USDT").inc(3)


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the server has ended this connection (EOF or reset on send)."""
    try:
        sock.sendall(b"x")
        sock.settimeout(0.05)
        return sock.recv(1) == b""
    except socket.timeout:
        return False
    except OSError:
        return True


# --- slowloris -------------------------------------------------------------------------


def test_a_dripping_client_loses_its_connection_at_the_request_deadline():
    """One byte at a time, each well within the per-recv timeout: the whole request is bounded."""
    with MetricsServer(port=0, request_timeout=1.0) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(DRIP_HEAD)
            started = time.monotonic()
            closed_after = None
            while time.monotonic() - started < 8:  # 8x the deadline: long enough to see it is not enforced
                if closed_by_peer(sock):
                    closed_after = time.monotonic() - started
                    break
                time.sleep(0.25)  # the drip interval itself, not a wait for the server
        assert closed_after is not None, "a client dripping a byte every 0.25 s kept its connection 8 s"
        assert closed_after < 3.0, f"closed after {closed_after:.2f}s with request_timeout=1"
        wait_until(lambda: handler_threads() == 0, timeout=5, what="the dripping client's thread to end")
        assert requests.get(server.url, timeout=5).status_code == 200


def test_a_stalled_tls_handshake_is_bounded_by_the_same_deadline(tmp_path):
    from certs import make_pki

    from tinywindow_otel.security import TLSConfig

    pki = make_pki(tmp_path)
    with MetricsServer(port=0, request_timeout=1.0, tls=TLSConfig(pki.server_cert, pki.server_key)) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"\x16\x03\x01\x02\x00")  # a TLS record header; the hello never follows
            started = time.monotonic()
            sock.settimeout(6)
            try:
                eof = sock.recv(1) == b""  # the server ends the connection (EOF or reset)
            except ConnectionResetError:
                eof = True
            elapsed = time.monotonic() - started
        assert eof and elapsed < 3.0, f"a stalled handshake held its connection {elapsed:.2f}s"
        response = requests.get(server.url, verify=pki.server_ca.cert_path, timeout=5)
        assert response.status_code == 200


def test_scrapes_keep_working_while_1000_drip_connections_are_open():
    record_something()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2500:  # 1000 client sockets plus the server's side in one process
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    drips: list[socket.socket] = []
    try:
        # The default cap; a deadline longer than the test, so only the cap can free threads.
        with MetricsServer(port=0, request_timeout=60.0) as server:
            for _ in range(1000):
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
                sock.sendall(DRIP_HEAD)
                drips.append(sock)
            # Connections beyond the cap were let go; their threads end.
            cap = DEFAULT_MAX_CONNECTIONS
            held = wait_until(lambda: (n := handler_threads()) <= cap + 4 and n, timeout=15,
                              what="server threads to fall to the connection cap")
            latencies = []
            for _ in range(20):
                started = time.monotonic()
                response = requests.get(server.url, timeout=5)
                latencies.append(time.monotonic() - started)
                assert response.status_code == 200
                assert sample_value(parse(response.text), "tinywindow_trades_total",
                                    status="filled", symbol="BTC/USDT") == 3
            assert handler_threads() <= cap + 4, "scrapes must not let the thread count grow"
            p90 = statistics.quantiles(latencies, n=10)[-1]
            print(f"1000 drip connections: {held} server threads held, scrape p90 {p90 * 1000:.1f} ms")
            assert p90 < 1.0, f"scrape p90 {p90:.2f}s behind 1000 drip connections"
    finally:
        for sock in drips:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_stop_lets_go_of_stalled_clients():
    server = MetricsServer(port=0, request_timeout=60.0).start()
    socks = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(5)]
    try:
        for sock in socks:
            sock.sendall(DRIP_HEAD)
        wait_until(lambda: handler_threads() == 5, timeout=5, what="five connections to be served")
        server.stop()
        wait_until(lambda: handler_threads() == 0, timeout=5, what="stalled threads to end after stop()")
    finally:
        for sock in socks:
            sock.close()
        server.stop()


# --- listen backlog ------------------------------------------------------------------------


def test_twenty_simultaneous_scrapes_are_not_delayed_by_syn_drops():
    record_something()
    with MetricsServer(port=0) as server:
        for _round in range(3):  # a dropped SYN costs a 1 s retransmit; one round can be lucky
            barrier = threading.Barrier(20)
            latencies: list[float] = []
            errors: list[BaseException] = []

            def scrape() -> None:
                try:
                    barrier.wait(timeout=10)
                    started = time.monotonic()
                    # http.client, not urlopen: urlopen's first calls build an SSL
                    # context per thread, a client-side cost that would hide the server's.
                    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
                    try:
                        conn.request("GET", "/metrics")
                        response = conn.getresponse()
                        response.read()
                        assert response.status == 200
                    finally:
                        conn.close()
                    latencies.append(time.monotonic() - started)
                except BaseException as exc:  # noqa: BLE001 - asserted below
                    errors.append(exc)

            threads = [threading.Thread(target=scrape) for _ in range(20)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=30)
            assert not errors, errors[:3]
            p90 = statistics.quantiles(latencies, n=10)[-1]
            print(f"20 simultaneous scrapes: p90 {p90 * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms")
            assert p90 < 0.5, f"p90 {p90:.3f}s: connections waited for SYN retransmits"


# --- methods, host, lifecycle ------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["FOO", "PROPFIND", "BREW"])
def test_unknown_methods_get_405_in_plain_text(server, method):
    response = requests.request(method, server.url, timeout=5)
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD"
    assert response.headers["Content-Type"].startswith("text/plain")
    assert "<html" not in response.text.lower()
    assert requests.get(server.url, timeout=5).status_code == 200


def test_error_pages_are_plain_text(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n")
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 431") and b"Content-Type: text/plain" in head
    assert b"<" not in body


@pytest.mark.parametrize("host", ["", "   "])
def test_an_empty_host_is_refused_not_all_interfaces(host):
    with pytest.raises(ConfigurationError, match="every interface.*127.0.0.1.*0.0.0.0"):
        MetricsServer(host=host, port=0)
    assert issubclass(ConfigurationError, ValueError)


@pytest.mark.parametrize("kwargs", [{"request_timeout": 0}, {"request_timeout": -1},
                                    {"max_connections": 0}, {"max_connections": 1.5},
                                    {"port": 70_000}, {"port": -1}, {"port": "8000"}, {"port": True}])
def test_limits_are_validated(kwargs):
    with pytest.raises(ConfigurationError, match=next(iter(kwargs))):
        MetricsServer(**{"port": 0, **kwargs})


def test_stop_racing_start_on_another_thread_never_finds_the_port_taken():
    server = MetricsServer(port=free_port())
    errors: list[BaseException] = []
    cycles = {"start": 0, "stop": 0}
    deadline = time.monotonic() + 3

    def loop(name: str) -> None:
        action = getattr(server, name)
        while time.monotonic() < deadline:
            try:
                action()
                cycles[name] += 1
            except BaseException as exc:  # noqa: BLE001 - asserted below
                errors.append(exc)
                return

    threads = [threading.Thread(target=loop, args=(name,)) for name in ("start", "stop")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    server.stop()
    assert not errors, errors[0]
    assert cycles["start"] > 5 and cycles["stop"] > 5, cycles
    with server:
        assert requests.get(server.url, timeout=5).status_code == 200


def test_start_failure_is_still_named():
    with MetricsServer(port=0) as first:
        with pytest.raises(MetricsServerError, match=rf"127\.0\.0\.1:{first.port}: address already in use"):
            MetricsServer(port=first.port).start()


# --- gzip ---------------------------------------------------------------------------------------


def test_gzip_when_the_scraper_asks_for_it(server):
    record_something()
    plain = requests.get(server.url, headers={"Accept-Encoding": "identity"}, timeout=5)
    assert "Content-Encoding" not in plain.headers
    request = urllib.request.Request(server.url, headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.headers["Content-Encoding"] == "gzip"
        assert response.headers["Vary"] == "Accept-Encoding"
        raw = response.read()
        assert int(response.headers["Content-Length"]) == len(raw)
    text = gzip.decompress(raw).decode()
    assert parse(text) == parse(plain.text)
    assert sample_value(parse(text), "tinywindow_trades_total", status="filled", symbol="BTC/USDT") == 3
    refused = requests.get(server.url, headers={"Accept-Encoding": "gzip;q=0, identity"}, timeout=5)
    assert "Content-Encoding" not in refused.headers
    head = requests.head(server.url, headers={"Accept-Encoding": "gzip"}, timeout=5)
    assert head.headers["Content-Encoding"] == "gzip" and head.content == b""


def test_when_every_slot_is_answering_a_new_connection_is_refused_at_once():
    from tinywindow_otel.pipeline import get_pipeline

    record_something()
    results: list = []

    def scrape(url: str) -> None:
        try:
            results.append(requests.get(url, timeout=20).status_code)
        except Exception as exc:  # noqa: BLE001 - asserted below
            results.append(exc)

    with MetricsServer(port=0, max_connections=2) as server:
        scrapers = [threading.Thread(target=scrape, args=(server.url,)) for _ in range(2)]
        with get_pipeline().scrape_lock:  # the lock every render takes: both scrapes wait inside it
            for thread in scrapers:
                thread.start()
            wait_until(lambda: handler_threads() == 2, timeout=10, what="two scrapes in flight")
            started = time.monotonic()
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as third:
                third.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
                try:
                    refused = third.recv(1) == b""
                except ConnectionResetError:
                    refused = True
            assert refused and time.monotonic() - started < 3, "a third connection must be closed, not queued"
        for thread in scrapers:
            thread.join(timeout=20)
        assert results == [200, 200]
        assert requests.get(server.url, timeout=5).status_code == 200
