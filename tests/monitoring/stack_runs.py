"""`tinywindow-otel stack` as a user runs it: child processes whose terminal output is read as printed.

The breach and calm scenarios take minutes of mostly waiting (rule windows,
`for:`, Alertmanager's grouping), so they run in the background for the whole
test session: ``tests/monitoring/conftest.py`` launches them when the session
starts and moves their checks (``test_breach_scenario.py``) to its end. A breach
run is stopped (Ctrl-C) as soon as every core alert has fired and resolved, so
nothing after the scenario can page; calm runs stay up until their check, which
makes them calm for the whole session, not only for a minute or two.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import fetch
from monitoring.assets import CORE_ALERTS, ROOT
from monitoring.toolchain import TOOLCHAINS, ToolUnavailable, path_dir, toolchain as resolve

#: Seconds from the launch of `stack` to the last RESOLVED: the README promises 5 minutes, and
#: that holds with the rest of the suite running meanwhile (the phases take 210 s; about 240 s seen).
BREACH_BUDGET = 300
CALM_SECONDS = 90  # at least this much calm, scraped, before its check
CALM_INTERVAL = 5  # seconds between scrapes and rule evaluations (the stack's default)
CALM_SEEDS = 3
#: Where the session keeps its Scenarios (conftest.py puts them there, the checks read them).
SCENARIOS = pytest.StashKey["Scenarios"]()
#: The checks that read them: run last, after the runs had the whole session.
CHECKS = "test_breach_scenario.py"

NOTIFICATION = re.compile(r"^alertmanager -> (?P<receiver>/\S+) \[(?P<status>FIRING|RESOLVED)\] "
                          r"(?P<alert>\w+) \((?P<severity>[^)]*)\): ")
CONDITION = re.compile(r"^scenario breach: (?P<alert>\w+) condition (?P<state>on|off)\b")
URL = re.compile(r"^\s+(?P<name>metrics|prometheus|alertmanager)\s+(?P<url>http://\S+)$")


def console_script() -> list[str]:
    """The installed `tinywindow-otel` next to this interpreter (what a user runs), else `python -m`."""
    script = Path(sys.executable).with_name("tinywindow-otel")
    return [str(script)] if script.exists() else [sys.executable, "-m", "tinywindow_otel"]


def seed() -> str:
    return str(random.SystemRandom().randrange(1_000_000))


@dataclass
class Line:
    at: float  # seconds since the launch
    text: str


@dataclass
class StackRun:
    """One `tinywindow-otel stack` child process and everything it printed, time-stamped as read."""

    label: str
    argv: list[str]
    path_dir: Path
    lines: list[Line] = field(default_factory=list)
    process: subprocess.Popen | None = None
    launched: float = 0.0

    def start(self) -> StackRun:
        env = {**os.environ, "PATH": f"{self.path_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.launched = time.monotonic()
        self.process = subprocess.Popen(self.argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name=f"stack-run {self.label}", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for text in self.process.stdout:
            with self._lock:
                self.lines.append(Line(time.monotonic() - self.launched, text.rstrip("\n")))

    def snapshot(self) -> list[Line]:
        with self._lock:
            return list(self.lines)

    @property
    def output(self) -> str:
        return "\n".join(f"{line.at:7.1f}s  {line.text}" for line in self.snapshot())

    @property
    def age(self) -> float:
        return time.monotonic() - self.launched

    def wait(self, predicate, until: float, what: str) -> None:
        """Poll ``predicate`` until ``until`` seconds after the launch; fail at once if the stack exited."""
        assert self.process is not None
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.label}: stack exited early with {self.process.returncode}:\n{self.output}")
            try:
                if predicate():
                    return
            except (OSError, KeyError, ValueError):  # not listening yet, URL not printed yet
                pass
            if self.age > until:
                raise AssertionError(f"{self.label}: no {what} within {until}s of the launch:\n{self.output}")
            time.sleep(0.5)

    def notifications(self) -> list[tuple[float, re.Match]]:
        return [(line.at, match) for line in self.snapshot() if (match := NOTIFICATION.match(line.text))]

    def conditions(self) -> dict[tuple[str, str], float]:
        """(alert, "on"/"off") -> when the scenario said so."""
        return {(m["alert"], m["state"]): line.at for line in self.snapshot() if (m := CONDITION.match(line.text))}

    def url(self, name: str) -> str:
        urls = {m["name"]: m["url"] for line in self.snapshot() if (m := URL.match(line.text))}
        return urls[name]

    def query(self, expr: str) -> list[dict]:
        body = json.loads(fetch(f"{self.url('prometheus')}/api/v1/query?" + urllib.parse.urlencode({"query": expr})))
        assert body["status"] == "success", body
        return body["data"]["result"]

    def stop(self) -> None:
        """Ctrl-C, as a user stops it: a clean exit with every child process gone."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(10)
        self._reader.join(10)
        assert code == 0, f"{self.label}: exit status {code}\n{self.output}"
        text = self.output
        assert "Traceback" not in text, text
        assert text.rstrip().endswith("tinywindow-otel stack: stopped"), text

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def breach_done(run: StackRun) -> bool:
    """Every core alert printed FIRING and, later, RESOLVED."""
    seen: dict[str, list[str]] = {}
    for _, match in run.notifications():
        seen.setdefault(match["alert"], []).append(match["status"])
    return all("RESOLVED" in seen.get(alert, [])[1:] for alert in CORE_ALERTS)


class BreachRun:
    """A breach run and its watcher: Ctrl-C once every core alert fired and resolved, or at the budget."""

    def __init__(self, run: StackRun) -> None:
        self.run = run
        self.error: BaseException | None = None  # what stopped it, if not the scenario's end
        self.stopped_after: float | None = None
        self._watcher = threading.Thread(target=self._watch, name=f"watch {run.label}", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        try:
            self.run.wait(lambda: breach_done(self.run), BREACH_BUDGET,
                          f"FIRING then RESOLVED for each of {sorted(CORE_ALERTS)}")
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        try:
            self.run.stop()
        except BaseException as exc:  # noqa: BLE001
            self.error = self.error or exc
        self.stopped_after = self.run.age

    def result(self, timeout: float) -> None:
        """Wait for the run to be over; raise what went wrong."""
        self._watcher.join(timeout)
        if self._watcher.is_alive():
            raise AssertionError(f"{self.run.label}: still running {timeout}s later:\n{self.run.output}")
        if self.error is not None:
            raise self.error


class Scenarios:
    """The background runs of one test session: breach on each toolchain, calm with a few seeds."""

    def __init__(self) -> None:
        self.breach: list[BreachRun] = []
        self.calm: list[StackRun] = []
        self.missing: list[str] = []  # toolchains that cannot be had, and why
        self._exits = ExitStack()
        self._base = Path(tempfile.mkdtemp(prefix="tinywindow-scenarios-"))
        self._exits.callback(shutil.rmtree, self._base, True)

    def launch(self, breach: bool, calm: bool) -> Scenarios:
        chains = []
        for name in TOOLCHAINS:
            try:
                chain = resolve(name)
            except ToolUnavailable as exc:
                self.missing.append(f"{name}: {exc}")
                continue
            chains.append((chain, path_dir(chain, self._base)))
        if breach:
            for chain, directory in chains:
                s = seed()
                run = self._start(f"{chain.name} breach (seed {s})", directory, "--scenario", "breach", "--seed", s)
                self.breach.append(BreachRun(run))
        if calm and chains:
            for index in range(CALM_SEEDS):
                chain, directory = chains[index % len(chains)]
                s = seed()  # calm: the default scenario
                self.calm.append(self._start(f"{chain.name} calm (seed {s})", directory,
                                             "--seed", s, "--interval", f"{CALM_INTERVAL}s"))
        return self

    def _start(self, label: str, directory: Path, *options: str) -> StackRun:
        argv = [*console_script(), "stack", "--port", "0", "--prometheus-port", "0", "--alertmanager-port", "0",
                "--fast-alerts", *options]
        run = StackRun(label, argv, directory).start()
        self._exits.callback(run.kill)
        return run

    def close(self) -> None:
        self._exits.close()
