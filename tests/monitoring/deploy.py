"""Real processes for the deployment-path tests: Prometheus, the collector, workload apps, on loopback.

Every port is a free one; every wait is bounded; every process is stopped (and
its log shown on failure) when the ``Processes`` context ends.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from helpers import free_port
from monitoring.assets import PROMETHEUS, ROOT
from tinywindow_otel.cli.stack import collector_environment

COLLECTOR_CONFIG = ROOT / "collector" / "otelcol.yaml"
OTLP_RECEIVER_CONFIG = ROOT / "prometheus" / "otlp-receiver.yml"
WORKLOAD = Path(__file__).with_name("otlp_workload.py")


class ProcessError(AssertionError):
    pass


class Processes:
    """Children started by a test; all terminated on exit, in reverse order."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.children: list[tuple[str, subprocess.Popen, Path]] = []

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc) -> None:
        for _, process, _ in reversed(self.children):
            stop(process)

    def start(self, name: str, argv: list[str], env: dict | None = None, stdin=subprocess.DEVNULL) -> subprocess.Popen:
        log = self.workdir / f"{name}.log"
        with open(log, "ab") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=stdin,
                                       env={**os.environ, **(env or {})}, cwd=self.workdir)
        self.children.append((name, process, log))
        return process

    def log(self, name: str, lines: int = 30) -> str:
        for child, _, log in self.children:
            if child == name:
                return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
        return "(no such process)"

    def wait_http(self, name: str, process: subprocess.Popen, url: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ProcessError(f"{name} exited with {process.returncode}:\n{self.log(name)}")
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise ProcessError(f"{name} not ready at {url} within {timeout}s:\n{self.log(name)}")


def stop(process: subprocess.Popen, timeout: float = 10.0) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)


# --- Prometheus -------------------------------------------------------------------------------------

class Prometheus:
    def __init__(self, procs: Processes, binary: str, name: str, config: dict, *flags: str,
                 files: dict[str, str] | None = None, port: int | None = None) -> None:
        self.name = name
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        directory = procs.workdir / name
        directory.mkdir()
        for relative, text in (files or {}).items():  # e.g. alerts/tinywindow.rules.yml beside the config
            (directory / relative).parent.mkdir(parents=True, exist_ok=True)
            (directory / relative).write_text(text)
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        self.process = procs.start(name, [
            binary, f"--config.file={directory / 'prometheus.yml'}", f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn", *flags])
        procs.wait_http(name, self.process, self.url + "/-/ready")

    def get(self, path: str) -> dict:
        """The ``data`` of a successful API answer, e.g. ``get("/api/v1/targets")``."""
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str, **params: str) -> list[dict]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr, **params})
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]["result"]

    def series(self, expr: str) -> dict[tuple, float]:
        """{(name, sorted label pairs without __name__): value} of an instant query."""
        out = {}
        for result in self.query(expr):
            labels = dict(result["metric"])
            name = labels.pop("__name__", "")
            out[(name, tuple(sorted(labels.items())))] = float(result["value"][1])
        return out


def repo_prometheus_config(addresses: dict[str, str | None], interval: str = "1s") -> dict:
    """prometheus/prometheus.yml with compose's service addresses replaced by loopback ones.

    ``addresses`` maps every ``host:port`` the file names (static targets, Alertmanager,
    DNS-discovered ``name:port``) to ``127.0.0.1:N``, or to None for a service that is
    not running in this test. A DNS-discovered service that runs becomes a static
    target (the address DNS would return); one that does not run yields no target,
    as DNS SD does for a compose service outside the enabled profiles. A static
    target must be mapped: the file's own promise is that it is always there.
    """
    config = yaml.safe_load(PROMETHEUS.read_text())
    config["global"].update(scrape_interval=interval, evaluation_interval=interval)

    def mapped(targets: list[str]) -> list[str]:
        unknown = [t for t in targets if t not in addresses]
        assert not unknown, f"no test address for {unknown} (prometheus/prometheus.yml)"
        return [addresses[t] for t in targets if addresses[t] is not None]

    for job in config["scrape_configs"]:
        static = [{**sc, "targets": mapped(sc["targets"])} for sc in job.pop("static_configs", [])]
        for sd in job.pop("dns_sd_configs", []):
            running = [addresses[f"{n}:{sd['port']}"] for n in sd["names"] if addresses.get(f"{n}:{sd['port']}")]
            static.append({"targets": running})
        job["static_configs"] = [sc for sc in static if sc["targets"]]
    for alerting in config.get("alerting", {}).get("alertmanagers", []):
        alerting["static_configs"] = [{**sc, "targets": mapped(sc["targets"])} for sc in alerting["static_configs"]]
    return config


def prometheus_config(interval: str = "1s", scrape: list[dict] | None = None, otlp: bool = False) -> dict:
    config: dict = {"global": {"scrape_interval": interval, "evaluation_interval": interval}}
    if scrape:
        config["scrape_configs"] = scrape
    if otlp:
        config.update(yaml.safe_load(OTLP_RECEIVER_CONFIG.read_text()))
    return config


# --- the collector ----------------------------------------------------------------------------------

class Collector:
    """otelcol-tinywindow running collector/otelcol.yaml unchanged, every address on a free loopback port."""

    def __init__(self, procs: Processes, binary: str, remote_write_url: str, name: str = "collector") -> None:
        self.procs, self.binary, self.name = procs, binary, name
        ports = {key: free_port() for key in ("health", "grpc", "http", "exporter", "telemetry")}
        self.health_url = f"http://127.0.0.1:{ports['health']}/"
        self.otlp_http = f"http://127.0.0.1:{ports['http']}"
        self.prometheus_target = f"127.0.0.1:{ports['exporter']}"
        self.telemetry_target = f"127.0.0.1:{ports['telemetry']}"
        self.env = collector_environment("127.0.0.1", ports, remote_write_url)
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.process = self.procs.start(self.name, [self.binary, f"--config={COLLECTOR_CONFIG}"], env=self.env)
        self.procs.wait_http(self.name, self.process, self.health_url)

    def kill(self) -> None:
        """SIGKILL: whatever the collector holds in its batch and queue is lost."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)


# --- workload apps ----------------------------------------------------------------------------------

class Workload:
    """otlp_workload.py in a child process; ``port`` is its /metrics port when it serves one."""

    def __init__(self, procs: Processes, name: str, env: dict[str, str], script: Path = WORKLOAD) -> None:
        self.procs, self.name = procs, name
        self._consumed = 0  # lines of its output already read
        self.process = procs.start(name, [sys.executable, str(script)], env=env, stdin=subprocess.PIPE)
        self.port = self._read_json("port", timeout=30)["port"]

    def _read_json(self, key: str, timeout: float) -> dict:
        """The next line of its output (stdout goes to its log) that is JSON holding ``key``."""
        log = self.procs.workdir / f"{self.name}.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ProcessError(f"{self.name} exited:\n{self.procs.log(self.name)}")
            lines = log.read_text(errors="replace").splitlines()
            for index in range(self._consumed, len(lines)):
                if lines[index].startswith("{") and key in lines[index]:
                    self._consumed = index + 1
                    # Only the object: stdout and stderr share the log, and an unbuffered print
                    # writes its newline separately, so an SDK log line can follow on the same line.
                    return json.JSONDecoder().raw_decode(lines[index])[0]
            time.sleep(0.05)
        raise ProcessError(f"{self.name} printed no {key!r} within {timeout}s:\n{self.procs.log(self.name)}")

    def record(self, wait: bool = True, timeout: float = 15.0) -> None:
        """One more round of the workload; with ``wait``, returns once recorded (its push may still fail)."""
        assert self.process.stdin is not None
        self.process.stdin.write(b"record\n")
        self.process.stdin.flush()
        if wait:
            self.recorded(timeout)

    def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command.encode() + b"\n")
        self.process.stdin.flush()

    def recorded(self, timeout: float = 15.0) -> None:
        self._read_json("recorded", timeout)


def otlp_env(endpoint: str, exporters: str = "otlp", interval_ms: int = 1000, **resource: str) -> dict[str, str]:
    """The standard OTel variables for a workload pushing to ``endpoint`` (a full metrics URL)."""
    attributes = ",".join(f"{k}={v}" for k, v in resource.items())
    return {
        "OTEL_METRICS_EXPORTER": exporters,
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_METRIC_EXPORT_INTERVAL": str(interval_ms),
        "OTEL_RESOURCE_ATTRIBUTES": attributes,
        "OTEL_SERVICE_NAME": "tinywindow",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")])),
    }
