"""A local Prometheus + Alertmanager around the demo: the no-docker way to see alerts fire.

    tinywindow-otel stack                 # demo :8000, Prometheus :9090, Alertmanager :9093
    tinywindow-otel stack --fast-alerts   # every non-zero ``for:`` shortened to 10s
    tinywindow-otel stack --collector     # the demo pushes OTLP to a collector, which remote-writes

Runs the installed ``prometheus`` and ``prometheus-alertmanager`` (or
``alertmanager``) binaries on loopback with the packaged
``alerts/tinywindow.rules.yml`` and ``alerts/alertmanager.yml``, each in a
temporary directory. Alertmanager's webhook receivers are pointed at a small
local sink that prints every notification, so a page shows up in the terminal.

With ``--collector`` the demo pushes OTLP (push only, nothing scraped from it)
to an OpenTelemetry Collector (``otelcol-tinywindow`` built by
scripts/build-go-tools, or ``otelcol-contrib``) running the repository's
``collector/otelcol.yaml``, which remote-writes to Prometheus: the push recipe
of docs/deployment.md. Prometheus also scrapes the collector's own metrics.

Only the standard library is used: the Prometheus configuration is written as
JSON (valid YAML), and the rule and Alertmanager files are copied as text with
two narrow substitutions (``for:`` durations, the webhook relay address).
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

_log = logging.getLogger(__name__)

#: The scrape job name; the alert rules select ``up{job="tinywindow"}``.
JOB = "tinywindow"
RULES_FILE = "alerts/tinywindow.rules.yml"
COLLECTOR_FILE = "collector/otelcol.yaml"
#: The scrape job of the collector's own metrics (as in prometheus/prometheus.yml).
COLLECTOR_JOB = "otel-collector"
#: The scrape job of Alertmanager's own metrics (AlertmanagerNotificationsFailing reads them).
ALERTMANAGER_JOB = "alertmanager"
#: service.instance.id of the demo when it pushes: its ``instance`` label in Prometheus.
PUSH_INSTANCE = "stack-demo"
ALERTMANAGER_FILE = "alerts/alertmanager.yml"
#: What alerts/alertmanager.yml contains in place of a real relay and secret.
WEBHOOK_PLACEHOLDER = "http://alert-relay:5001"
TOKEN_PLACEHOLDER = "/run/secrets/webhook-token"

PROMETHEUS_BINARIES = ("prometheus",)
ALERTMANAGER_BINARIES = ("prometheus-alertmanager", "alertmanager")
COLLECTOR_BINARIES = ("otelcol-tinywindow", "otelcol-contrib")

_FOR_LINE = re.compile(r"^(?P<indent>\s*(?:keep_firing_)?for:\s*)(?P<value>\S+)\s*$", re.MULTILINE)
_RECEIVER_NAME = re.compile(r"^  - name:\s*(\S+)\s*$", re.MULTILINE)
_NOTIFY_TIMING = re.compile(r"^(?P<indent>\s*(?P<key>group_wait|group_interval):\s*)\S+\s*$", re.MULTILINE)
#: Alertmanager waits in the local stack when alerts are shortened: a RESOLVED shows within seconds.
FAST_NOTIFY = {"group_wait": "1s", "group_interval": "5s"}


class StackError(RuntimeError):
    """The local stack could not be started (missing binary or asset, process exited, not ready)."""


def find_assets(start: str | Path | None = None) -> Path:
    """The directory holding ``alerts/``: ``start``, else the cwd, else the packaged assets."""
    from . import assets

    if start is not None:
        candidates = [Path(start)]
    else:
        candidates = [Path.cwd()]
        try:
            candidates.append(assets.path())
        except assets.AssetsNotFound:
            pass
    for candidate in candidates:
        if (candidate / RULES_FILE).is_file() and (candidate / ALERTMANAGER_FILE).is_file():
            return candidate.resolve()
    looked = ", ".join(str(c) for c in candidates)
    raise StackError(f"cannot find {RULES_FILE} and {ALERTMANAGER_FILE} under {looked}; "
                     "pass --assets DIR (a folder written by `tinywindow-otel assets export`)")


def find_binary(names: tuple[str, ...]) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise StackError(f"none of {', '.join(names)} is installed "
                     "(Debian: apt-get install prometheus prometheus-alertmanager)")


def shorten_for(rules_text: str, duration: str) -> str:
    """Replace every non-zero ``for:`` and ``keep_firing_for:`` in a rule file by ``duration`` (zero stays zero)."""
    def replace(match: re.Match) -> str:
        if re.fullmatch(r"0+[smhdwy]?", match["value"]):
            return match.group(0)
        return match["indent"] + duration
    return _FOR_LINE.sub(replace, rules_text)


def prometheus_config(app_target: str | None, alertmanager_target: str, interval: str = "5s",
                      collector_target: str | None = None) -> str:
    """A Prometheus configuration (JSON, which is YAML) equivalent to prometheus/prometheus.yml.

    ``app_target`` None: the app pushes (nothing to scrape); ``collector_target``:
    the collector's own metrics endpoint, scraped as the otel-collector job.
    Alertmanager's own metrics are always scraped (job alertmanager).
    """
    scrape_configs = []
    if app_target is not None:
        scrape_configs.append({"job_name": JOB, "static_configs": [{"targets": [app_target]}]})
    if collector_target is not None:
        scrape_configs.append({"job_name": COLLECTOR_JOB, "static_configs": [{"targets": [collector_target]}]})
    scrape_configs.append({"job_name": ALERTMANAGER_JOB, "static_configs": [{"targets": [alertmanager_target]}]})
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval,
                   "external_labels": {"system": "tinywindow"}},
        "rule_files": ["alerts/*.rules.yml"],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager_target]}]}]},
        "scrape_configs": scrape_configs,
    }
    return json.dumps(config, indent=2) + "\n"


def collector_environment(host: str, ports: dict[str, int], remote_write_url: str) -> dict[str, str]:
    """The variables collector/otelcol.yaml reads its addresses from (its defaults are the container's).

    ``ports``: ``http``, ``grpc`` (OTLP in), ``exporter`` (the :8889 prometheus
    exporter), ``telemetry`` (its own metrics), ``health``.
    """
    return {
        "OTELCOL_OTLP_HTTP_ENDPOINT": f"{host}:{ports['http']}",
        "OTELCOL_OTLP_GRPC_ENDPOINT": f"{host}:{ports['grpc']}",
        "OTELCOL_PROMETHEUS_ENDPOINT": f"{host}:{ports['exporter']}",
        "OTELCOL_TELEMETRY_HOST": host,
        "OTELCOL_TELEMETRY_PORT": str(ports["telemetry"]),
        "OTELCOL_HEALTH_ENDPOINT": f"{host}:{ports['health']}",
        "PROMETHEUS_REMOTE_WRITE_URL": remote_write_url,
    }


def alertmanager_config(template: str, webhook_base: str, token_file: str | Path, fast: bool = False) -> str:
    """alerts/alertmanager.yml with every receiver delivering to the local sink.

    Routes and inhibitions stay as written. Each receiver (PagerDuty, Slack, the
    webhook relay) becomes one webhook to ``{webhook_base}/{receiver name}`` with
    the bearer token in ``token_file``, so every notification shows in the
    terminal. ``fast``: group waits of seconds, so a RESOLVED follows quickly.
    """
    head, marker, receivers = template.partition("\nreceivers:\n")
    names = _RECEIVER_NAME.findall(receivers)
    if not marker or not names:
        raise StackError(f"{ALERTMANAGER_FILE} has no receivers section with named receivers")
    if fast:
        head = _NOTIFY_TIMING.sub(lambda m: m["indent"] + FAST_NOTIFY[m["key"]], head)
    local = [{"name": name, "webhook_configs": [{
        "url": f"{webhook_base.rstrip('/')}/{name}", "send_resolved": True,
        "http_config": {"authorization": {"type": "Bearer", "credentials_file": str(token_file)}}}]}
        for name in names]
    # JSON is YAML: one flow-style line per receiver.
    return head + marker + "".join(f"  - {json.dumps(receiver)}\n" for receiver in local)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class WebhookSink:
    """Receives Alertmanager webhook notifications on loopback and keeps them.

    ``notifications`` holds ``(path, authorized, payload)``; ``on_notification``
    is called with each one (the CLI prints it).
    """

    def __init__(self, token: str, host: str = "127.0.0.1",
                 on_notification: Callable[[str, bool, dict], None] | None = None) -> None:
        self.token = token
        self.notifications: list[tuple[str, bool, dict]] = []
        self._lock = threading.Lock()
        self._on_notification = on_notification
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                authorized = self.headers.get("Authorization") == f"Bearer {sink.token}"
                try:
                    payload = json.loads(body or b"{}")
                except ValueError:
                    payload = {"invalid": body.decode("utf-8", "replace")}
                sink._record(self.path, authorized, payload)
                self.send_response(200 if authorized else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args) -> None:  # noqa: A002
                pass

        self._httpd = ThreadingHTTPServer((host, 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="tinywindow-otel-webhook-sink", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.socket.getsockname()[:2]
        return f"http://{host}:{port}"

    def start(self) -> WebhookSink:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def _record(self, path: str, authorized: bool, payload: dict) -> None:
        with self._lock:
            self.notifications.append((path, authorized, payload))
        if self._on_notification is not None:
            try:
                self._on_notification(path, authorized, payload)
            except Exception:  # noqa: BLE001 - a printing problem must not break delivery
                _log.exception("webhook notification callback failed")


def describe_notification(path: str, authorized: bool, payload: dict) -> str:
    """One line per alert in a notification, for the terminal."""
    lines = []
    for alert in payload.get("alerts", []):
        labels = alert.get("labels", {})
        summary = alert.get("annotations", {}).get("summary", "")
        lines.append(f"alertmanager -> {path} [{alert.get('status', '?').upper()}] "
                     f"{labels.get('alertname', '?')} ({labels.get('severity', '?')}): {summary}")
    if not authorized:
        lines.append(f"alertmanager -> {path}: notification without the expected bearer token")
    return "\n".join(lines)


class LocalStack:
    """Prometheus and Alertmanager as child processes on loopback, each with a temporary directory.

        with LocalStack(app_target="127.0.0.1:8000", prometheus_port=0, alertmanager_port=0) as stack:
            print(stack.prometheus_url, stack.alertmanager_url)
    """

    def __init__(
        self,
        app_target: str | None,
        *,
        assets: str | Path | None = None,
        host: str = "127.0.0.1",
        prometheus_port: int = 9090,
        alertmanager_port: int = 9093,
        interval: str = "5s",
        for_override: str | None = None,
        on_notification: Callable[[str, bool, dict], None] | None = None,
        collector: bool = False,
        collector_binary: str | None = None,
    ) -> None:
        self.app_target = app_target
        self.assets = find_assets(assets)
        self.collector = collector or collector_binary is not None
        self.collector_binary = collector_binary
        if self.collector and not (self.assets / COLLECTOR_FILE).is_file():
            raise StackError(f"cannot find {COLLECTOR_FILE} under {self.assets}")
        # OTLP/HTTP in, its own metrics, health; gRPC and the :8889 exporter are unused but must not collide.
        self.collector_ports = ({name: free_port(host) for name in ("http", "grpc", "exporter", "telemetry", "health")}
                                if self.collector else {})
        self.host = host
        self.prometheus_port = prometheus_port or free_port(host)
        self.alertmanager_port = alertmanager_port or free_port(host)
        self.interval = interval
        self.for_override = for_override
        self.sink = WebhookSink(secrets.token_hex(16), host, on_notification)
        self.workdir: Path | None = None
        self._processes: dict[str, subprocess.Popen] = {}
        self._logs: list = []

    @property
    def prometheus_url(self) -> str:
        return f"http://{self.host}:{self.prometheus_port}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://{self.host}:{self.alertmanager_port}"

    @property
    def collector_otlp_url(self) -> str:
        """Base URL for OTEL_EXPORTER_OTLP_ENDPOINT (http/protobuf); /v1/metrics is appended by the SDK."""
        return f"http://{self.host}:{self.collector_ports['http']}"

    @property
    def collector_metrics_target(self) -> str:
        return f"{self.host}:{self.collector_ports['telemetry']}"

    def _collector_env(self) -> dict[str, str]:
        return {**os.environ, **collector_environment(self.host, self.collector_ports,
                                                      f"{self.prometheus_url}/api/v1/write")}

    def start(self, timeout: float = 30.0) -> LocalStack:
        prometheus = find_binary(PROMETHEUS_BINARIES)
        alertmanager = find_binary(ALERTMANAGER_BINARIES)
        collector = None
        if self.collector:
            collector = self.collector_binary or find_binary(COLLECTOR_BINARIES)
        self.workdir = Path(tempfile.mkdtemp(prefix="tinywindow-stack-"))
        try:
            self._write_configs()
            self.sink.start()
            self._launch("alertmanager", [
                alertmanager,
                f"--config.file={self.workdir / 'alertmanager.yml'}",
                f"--storage.path={self.workdir / 'alertmanager-data'}",
                f"--web.listen-address={self.host}:{self.alertmanager_port}",
                "--cluster.listen-address=",  # no gossip: one local instance
                "--log.level=warn",
            ])
            deadline = time.monotonic() + timeout
            # Alertmanager first: alerts Prometheus sends before it listens are
            # re-sent only after --rules.alert.resend-delay (1m).
            self._wait_ready("alertmanager", self.alertmanager_url + "/-/ready", deadline)
            self._launch("prometheus", [
                prometheus,
                f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'prometheus-data'}",
                f"--web.listen-address={self.host}:{self.prometheus_port}",
                "--log.level=warn",
                *(["--web.enable-remote-write-receiver"] if collector else []),
                # Fast alerts: alerts fired before Alertmanager is discovered (the
                # Watchdog, at the first evaluation) are re-sent in seconds, not 1m.
                *(["--rules.alert.resend-delay=5s"] if self.for_override else []),
            ])
            if collector:
                self._launch("collector", [collector, f"--config={self.assets / COLLECTOR_FILE}"],
                             env=self._collector_env())
            self._wait_ready("prometheus", self.prometheus_url + "/-/ready", deadline)
            if collector:
                self._wait_ready("collector", f"http://{self.host}:{self.collector_ports['health']}/", deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the children (collector and Prometheus first, so no more alerts are sent), then clean up."""
        for name in ("collector", "prometheus", "alertmanager"):
            process = self._processes.pop(name, None)
            if process is None or process.poll() is not None:
                continue
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                _log.warning("%s did not stop within %ss; killing it", name, timeout)
                process.kill()
                process.wait(timeout)
        for log in self._logs:
            log.close()
        self._logs.clear()
        if self.sink._thread.is_alive():
            self.sink.stop()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _write_configs(self) -> None:
        assert self.workdir is not None
        (self.workdir / "alerts").mkdir()
        for rule_file in sorted((self.assets / RULES_FILE).parent.glob("*.rules.yml")):
            rules = rule_file.read_text(encoding="utf-8")
            if self.for_override:
                rules = shorten_for(rules, self.for_override)
            (self.workdir / "alerts" / rule_file.name).write_text(rules, encoding="utf-8")
        (self.workdir / "prometheus.yml").write_text(
            prometheus_config(self.app_target, f"{self.host}:{self.alertmanager_port}", self.interval,
                              self.collector_metrics_target if self.collector else None), encoding="utf-8")
        token_file = self.workdir / "webhook-token"
        token_file.write_text(self.sink.token, encoding="utf-8")
        os.chmod(token_file, 0o600)
        template = (self.assets / ALERTMANAGER_FILE).read_text(encoding="utf-8")
        (self.workdir / "alertmanager.yml").write_text(
            alertmanager_config(template, self.sink.url, token_file, fast=self.for_override is not None),
            encoding="utf-8")

    def _launch(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        assert self.workdir is not None
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        self._logs.append(log)
        # Own session: a Ctrl-C in the terminal reaches us, and we stop the children in order.
        self._processes[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                                 stdin=subprocess.DEVNULL, start_new_session=True)

    def _wait_ready(self, name: str, url: str, deadline: float) -> None:
        while time.monotonic() < deadline:
            process = self._processes[name]
            if process.poll() is not None:
                raise StackError(f"{name} exited with status {process.returncode}: {self._log_tail(name)}")
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise StackError(f"{name} was not ready at {url} in time: {self._log_tail(name)}")

    def _log_tail(self, name: str, lines: int = 10) -> str:
        assert self.workdir is not None
        try:
            return " | ".join((self.workdir / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def duration_millis(duration: str) -> int:
    """A Prometheus duration such as 5s, 1m, 500ms in milliseconds."""
    units = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
    parts = re.findall(r"(\d+)(ms|s|m|h)", duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise StackError(f"cannot read the interval {duration!r} (use e.g. 5s or 1m)")
    return sum(int(n) * units[u] for n, u in parts)


def run(*, host: str, port: int, prometheus_port: int, alertmanager_port: int, interval: str,
        fast_alerts: bool, assets: str | None, rate: float, seed: int | None,
        stop: threading.Event, out: Callable[[str], None] = print,
        collector: bool = False, otelcol: str | None = None, scenario: str = "calm") -> int:
    """The ``tinywindow-otel stack`` command: demo + Prometheus + Alertmanager until ``stop`` is set.

    ``collector``: the demo pushes OTLP through an OpenTelemetry Collector (``otelcol``
    binary, else found on PATH) instead of being scraped.
    """
    from . import demo
    from ..server import MetricsServer

    common: dict[str, Any] = dict(assets=assets, host=host, prometheus_port=prometheus_port, alertmanager_port=alertmanager_port,
                  interval=interval, for_override="10s" if fast_alerts else None,
                  on_notification=lambda *n: out(describe_notification(*n)))
    if collector or otelcol:
        from ..pipeline import configure, force_flush

        push_millis = duration_millis(interval)  # one push per scrape interval: rate windows see the same sample count
        with LocalStack(None, collector=True, collector_binary=otelcol, **common) as stack:
            # Before the demo records anything: the pipeline is built at first use.
            configure(exporters="otlp", endpoint=stack.collector_otlp_url, protocol="http/protobuf",
                      export_interval_millis=push_millis, service_name=JOB,
                      resource_attributes={"service.instance.id": PUSH_INSTANCE, "deployment.environment": "local"})
            out("tinywindow-otel stack: running, demo pushing through the collector (Ctrl-C to stop)")
            out(f"  otlp          {stack.collector_otlp_url}")
            out(f"  prometheus    {stack.prometheus_url}")
            out(f"  alerts        {stack.prometheus_url}/alerts")
            out(f"  alertmanager  {stack.alertmanager_url}")
            demo.run(stop, ticks_per_second=rate, seed=seed, scenario=scenario, out=out)
            force_flush()
        out("tinywindow-otel stack: stopped")
        return 0

    with MetricsServer(host, port) as server:
        stack = LocalStack(f"{host}:{server.port}", **common)
        with stack:
            out("tinywindow-otel stack: running (Ctrl-C to stop)")
            out(f"  metrics       {server.url}")
            out(f"  prometheus    {stack.prometheus_url}")
            out(f"  alerts        {stack.prometheus_url}/alerts")
            out(f"  alertmanager  {stack.alertmanager_url}")
            demo.run(stop, ticks_per_second=rate, seed=seed, scenario=scenario, out=out)
    out("tinywindow-otel stack: stopped")
    return 0
