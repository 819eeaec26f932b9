"""Endpoint security (server.py, security.py) with real HTTPS requests and generated certificates."""

from __future__ import annotations

import re
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import requests
from certs import make_pki
from helpers import parse, require_tool, sample_value

from tinywindow_otel import MetricsServer
from tinywindow_otel.metrics import REGISTRY
from tinywindow_otel.security import (
    ENV_AUTH_HASH_FILE, ENV_AUTH_USER, ENV_TLS_CERT, ENV_TLS_KEY, BasicAuth, SecurityConfigError, TLSConfig,
    hash_password, verify_password,
)

REPO = Path(__file__).resolve().parent.parent
# Few iterations keep the tests fast; production hashes use the default.
FAST = 10_000


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def record_something() -> None:
    REGISTRY.by_attr("trades_total").labels("filled", "BTC/USDT").inc(3)


def https_get(server, pki, path="/metrics", **kwargs):
    return requests.get(f"https://127.0.0.1:{server.port}{path}", verify=pki.server_ca.cert_path, timeout=5, **kwargs)


# --- routing -------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/metrics/", "/metricsz", "/metrics/../etc/passwd", "/admin",
                                  "/healthz/x", "/METRICS", "/metrics.json"])
def test_only_metrics_and_healthz_answer(server, path):
    response = requests.get(f"http://127.0.0.1:{server.port}{path}", timeout=5)
    assert response.status_code == 404


def test_metrics_healthz_and_methods(server):
    record_something()
    base = f"http://127.0.0.1:{server.port}"
    response = requests.get(base + "/metrics", timeout=5)
    assert response.status_code == 200
    assert sample_value(parse(response.text), "tinywindow_trades_total", status="filled", symbol="BTC/USDT") == 3
    assert requests.get(base + "/healthz", timeout=5).text == "ok\n"
    assert requests.get(base + "/metrics?x=1", timeout=5).status_code == 200
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        response = requests.request(method, base + "/metrics", timeout=5)
        assert response.status_code == 405 and response.headers["Allow"] == "GET, HEAD"


def test_default_bind_is_loopback():
    assert MetricsServer().host == "127.0.0.1"


# --- TLS -----------------------------------------------------------------------


def test_tls_serves_https_and_refuses_plain_http(pki):
    record_something()
    with MetricsServer(port=0, tls=TLSConfig(pki.server_cert, pki.server_key)) as server:
        assert server.url.startswith("https://")
        response = https_get(server, pki)
        assert response.status_code == 200
        assert sample_value(parse(response.text), "tinywindow_trades_total", status="filled", symbol="BTC/USDT") == 3
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5)
        # An untrusted client (no CA configured) refuses the server: the cert really is ours.
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(server.url, timeout=5, verify=pki.client_ca.cert_path)
        assert https_get(server, pki).status_code == 200, "a failed handshake must not break the server"


def test_mutual_tls_requires_a_client_cert_from_the_configured_ca(pki):
    tls = TLSConfig(pki.server_cert, pki.server_key, client_ca_file=pki.client_ca.cert_path)
    with MetricsServer(port=0, tls=tls) as server:
        assert https_get(server, pki, cert=(pki.client_cert, pki.client_key)).status_code == 200
        for cert in (None, (pki.rogue_client_cert, pki.rogue_client_key)):
            with pytest.raises((requests.exceptions.SSLError, requests.ConnectionError)):
                https_get(server, pki, cert=cert)
        assert https_get(server, pki, cert=(pki.client_cert, pki.client_key)).status_code == 200


def test_tls_with_missing_files_fails_at_construction_naming_them(tmp_path):
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(SecurityConfigError, match="nope.pem"):
        MetricsServer(port=0, tls=TLSConfig(missing, missing))


# --- basic auth ------------------------------------------------------------------


def test_password_hashes_verify_and_malformed_ones_are_rejected():
    stored = hash_password("correct horse", iterations=FAST)
    assert stored.startswith("pbkdf2_sha256$10000$")
    assert verify_password("correct horse", stored)
    assert not verify_password("correct horsE", stored)
    assert hash_password("x", iterations=FAST) != hash_password("x", iterations=FAST), "salted"
    for bad in ("", "plaintext", "md5$1$a$b", "pbkdf2_sha256$10$YQ==$YQ==", "pbkdf2_sha256$x$YQ==$YQ==",
                "pbkdf2_sha256$10000$!!$YQ=="):
        with pytest.raises(SecurityConfigError, match="pbkdf2_sha256"):
            BasicAuth("prometheus", bad)
    with pytest.raises(SecurityConfigError):
        BasicAuth("a:b", stored)
    assert "correct" not in repr(BasicAuth("prometheus", stored)) and stored not in repr(BasicAuth("prometheus", stored))


def test_basic_auth_over_tls(pki):
    record_something()
    auth = BasicAuth("prometheus", hash_password("s3cret pässword", iterations=FAST))
    with MetricsServer(port=0, tls=TLSConfig(pki.server_cert, pki.server_key), auth=auth) as server:
        response = https_get(server, pki)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith('Basic realm="tinywindow-otel"')
        assert "tinywindow_" not in response.text
        for credentials in (("prometheus", "wrong"), ("someone", "s3cret pässword"), ("", ""), ("prometheus", "")):
            assert https_get(server, pki, auth=credentials).status_code == 401, credentials
        for header in ("Bearer abc", "Basic !!!", "Basic " + "eA==", "basic", "Basic " + "A" * 10_000):
            assert https_get(server, pki, headers={"Authorization": header}).status_code == 401, header
        good = https_get(server, pki, auth=("prometheus", "s3cret pässword"))
        assert good.status_code == 200
        assert sample_value(parse(good.text), "tinywindow_trades_total", status="filled", symbol="BTC/USDT") == 3
        # The remembered header makes later scrapes cheap; others still need the password.
        started = time.monotonic()
        for _ in range(20):
            assert https_get(server, pki, auth=("prometheus", "s3cret pässword")).status_code == 200
        assert time.monotonic() - started < 5
        assert https_get(server, pki, auth=("prometheus", "wrong")).status_code == 401
        # Container health checks need no credentials.
        assert https_get(server, pki, path="/healthz").status_code == 200


def test_tls_and_auth_from_the_environment(pki, tmp_path, monkeypatch):
    hash_file = tmp_path / "hash"
    hash_file.write_text(hash_password("from-file", iterations=FAST) + "\n")
    monkeypatch.setenv(ENV_TLS_CERT, pki.server_cert)
    monkeypatch.setenv(ENV_TLS_KEY, pki.server_key)
    monkeypatch.setenv(ENV_AUTH_USER, "prometheus")
    monkeypatch.setenv(ENV_AUTH_HASH_FILE, str(hash_file))
    with MetricsServer(port=0) as server:
        assert https_get(server, pki).status_code == 401
        assert https_get(server, pki, auth=("prometheus", "from-file")).status_code == 200
    monkeypatch.delenv(ENV_AUTH_HASH_FILE)
    with pytest.raises(SecurityConfigError, match=ENV_AUTH_USER):
        MetricsServer(port=0)


# --- slow and malformed clients ------------------------------------------------------------


@pytest.mark.parametrize("secure", [False, True], ids=["http", "https"])
def test_stalled_and_malformed_clients_do_not_block_scrapes(pki, secure):
    tls = TLSConfig(pki.server_cert, pki.server_key) if secure else None
    record_something()
    with MetricsServer(port=0, tls=tls) as server:
        stalled = []
        try:
            for _ in range(5):  # connect and send nothing (no request, no TLS hello)
                stalled.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
            half = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            stalled.append(half)
            half.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # headers never finished
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as garbage:
                garbage.sendall(b"\x16\x03\x01\x00\xff" + b"\x00" * 64 + b"\r\n\r\n")  # neither HTTP nor TLS
            started = time.monotonic()
            if secure:
                response = https_get(server, pki)
            else:
                response = requests.get(server.url, timeout=5)
            elapsed = time.monotonic() - started
            assert response.status_code == 200 and "tinywindow_trades_total" in response.text
            # Blocked behind a stalled client means waiting out its 10 s socket timeout;
            # 3 s leaves room for a loaded CI machine without hiding that.
            assert elapsed < 3.0, f"a scrape waited {elapsed:.2f}s behind stalled clients"
        finally:
            for sock in stalled:
                sock.close()


def test_malformed_request_lines_get_400_and_the_server_keeps_serving(server):
    for raw in (b"\x00\x01\x02 garbage\r\n\r\n", b"GET\r\n\r\n", b"GET /metrics HTTP/9.9\r\n\r\n",
                b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(raw)
            reply = b""
            while len(reply) < 4096 and (chunk := sock.recv(4096)):
                reply += chunk
            # A one-word request line is answered HTTP/0.9 style: an error page without a status line.
            assert re.search(rb"^HTTP/1\.\d [45]\d\d|Error code: [45]\d\d", reply), reply[:200]
    assert requests.get(server.url, timeout=5).status_code == 200


# --- Prometheus scrape config ------------------------------------------------------------------


def test_scrape_tls_example_passes_promtool(tmp_path):
    promtool = require_tool("promtool")
    # promtool checks that referenced files exist; lay them out beside a copy.
    shutil.copy(REPO / "prometheus" / "scrape-tls-example.yml", tmp_path / "prometheus.yml")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name in ("tinywindow-ca.pem", "prometheus-client.pem", "prometheus-client-key.pem", "metrics-password"):
        (secrets / name).write_text("placeholder\n")
    result = subprocess.run([promtool, "check", "config", "--syntax-only", str(tmp_path / "prometheus.yml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_real_prometheus_scrapes_over_mutual_tls_with_basic_auth(pki, tmp_path):
    """The example config's shape, run by the real Prometheus binary against our server."""
    import yaml

    from helpers import free_port, wait_until

    prometheus = require_tool("prometheus")
    record_something()
    password_file = tmp_path / "password"
    password_file.write_text("scrape-me")
    auth = BasicAuth("prometheus", hash_password("scrape-me", iterations=FAST))
    tls = TLSConfig(pki.server_cert, pki.server_key, client_ca_file=pki.client_ca.cert_path)
    with MetricsServer(port=0, tls=tls, auth=auth) as server:
        config = yaml.safe_load((REPO / "prometheus" / "scrape-tls-example.yml").read_text())
        job = config["scrape_configs"][0]
        job["scrape_interval"] = "1s"
        job["static_configs"] = [{"targets": [f"127.0.0.1:{server.port}"]}]
        job["tls_config"].update(ca_file=pki.server_ca.cert_path, cert_file=pki.client_cert,
                                 key_file=pki.client_key, server_name="localhost")
        job["basic_auth"]["password_file"] = str(password_file)
        config.pop("rule_files", None)
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        process = subprocess.Popen(
            [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        try:
            def scraped():
                result = requests.get(f"http://127.0.0.1:{port}/api/v1/query",
                                      params={"query": 'tinywindow_trades_total{symbol="BTC/USDT"}'}, timeout=2).json()
                return result["data"]["result"]

            result = wait_until(scraped, timeout=30, what="Prometheus to scrape over mTLS + basic auth")
            assert float(result[0]["value"][1]) == 3
            up = requests.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": "up"}, timeout=2).json()
            assert up["data"]["result"][0]["value"][1] == "1"
        finally:
            process.terminate()
            process.wait(timeout=30)


# --- strict X.509 (the default from Python 3.13) ------------------------------------------------------


def test_mutual_tls_passes_strict_x509_verification_on_every_python(pki):
    """The client verifies strictly as Python 3.13 does by default, whatever Python runs this."""
    tls = TLSConfig(pki.server_cert, pki.server_key, client_ca_file=pki.client_ca.cert_path)
    client = ssl.create_default_context(cafile=pki.server_ca.cert_path)
    client.verify_flags |= ssl.VERIFY_X509_STRICT
    client.load_cert_chain(pki.client_cert, pki.client_key)
    with MetricsServer(port=0, tls=tls) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw, \
                client.wrap_socket(raw, server_hostname="localhost") as conn:
            conn.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            reply = b""
            while chunk := conn.recv(4096):
                reply += chunk
    assert reply.startswith(b"HTTP/1.0 200") and reply.endswith(b"ok\n")


def test_client_certificates_are_verified_strictly_on_every_python(pki, tmp_path):
    """A client cert without an Authority Key Identifier is refused on 3.10 as on 3.13."""
    lax_cert, lax_key = pki.client_ca.issue(tmp_path, "lax-client", server=False, strict=False)
    tls = TLSConfig(pki.server_cert, pki.server_key, client_ca_file=pki.client_ca.cert_path)
    with MetricsServer(port=0, tls=tls) as server:
        with pytest.raises((requests.exceptions.SSLError, requests.ConnectionError)):
            https_get(server, pki, cert=(lax_cert, lax_key))
        assert https_get(server, pki, cert=(pki.client_cert, pki.client_key)).status_code == 200
