"""The Prometheus / Alertmanager / collector binaries the monitoring tests run, and the version matrix.

Two toolchains, each a full set of ``prometheus``, ``promtool``, ``alertmanager``
(also reachable as ``prometheus-alertmanager``) and ``amtool``:

* ``debian``  - Debian's packages on PATH: Prometheus 2.42, Alertmanager 0.25 (the oldest supported);
* ``current`` - Prometheus 3.x and Alertmanager 0.35 built from ``tools/`` by ``scripts/build-go-tools``.

A test opts into the matrix with the ``toolchain`` fixture (tests/monitoring/conftest.py):
it then runs once per toolchain, with that toolchain's binaries first on PATH, so
``require_tool("promtool")`` and ``LocalStack`` pick them up unchanged; the paths
are also on the fixture's value (``toolchain.promtool`` ...).

The Go build runs at most once per session (``scripts/build-go-tools`` caches the
binaries outside the checkout; ``scripts/test`` runs it before pytest).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from monitoring.assets import ROOT

BUILD_SCRIPT = ROOT / "scripts" / "build-go-tools"
TOOLCHAINS = ("debian", "current")
# Names a toolchain provides on PATH -> attribute of Toolchain.
PROVIDED = {"prometheus": "prometheus", "promtool": "promtool", "alertmanager": "alertmanager",
            "prometheus-alertmanager": "alertmanager", "amtool": "amtool"}


class ToolUnavailable(RuntimeError):
    """A binary of a toolchain cannot be had (not installed, or the Go build failed)."""


@dataclass(frozen=True)
class Toolchain:
    name: str
    prometheus: str
    promtool: str
    alertmanager: str
    amtool: str

    def prometheus_major(self) -> int:
        return int(prometheus_version(self.prometheus).split(".")[0])


def _run_build(*units: str) -> dict[str, str]:
    if shutil.which("go") is None:
        raise ToolUnavailable("the go tool is not installed (needed to build Prometheus 3, Alertmanager 0.35 "
                              "and the collector: scripts/build-go-tools)")
    result = subprocess.run([str(BUILD_SCRIPT), "--print", *units], capture_output=True, text=True,
                            timeout=3600, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise ToolUnavailable(f"scripts/build-go-tools {' '.join(units)} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


_BUILT: dict[tuple[str, ...], dict[str, str] | ToolUnavailable] = {}


def go_binaries(*units: str) -> dict[str, str]:
    """{binary name: path} for these build units (collector, prometheus, alertmanager).

    Built (or found in the cache) once per session; a failure is remembered too,
    so the remaining tests report it at once instead of building again.
    """
    if units not in _BUILT:
        try:
            _BUILT[units] = _run_build(*units)
        except ToolUnavailable as exc:
            _BUILT[units] = exc
    outcome = _BUILT[units]
    if isinstance(outcome, ToolUnavailable):
        raise outcome
    return outcome


def collector_binary() -> str:
    return go_binaries("collector")["otelcol-tinywindow"]


@functools.cache
def toolchain(name: str) -> Toolchain:
    if name == "debian":
        found = {tool: shutil.which(tool) for tool in ("prometheus", "promtool", "prometheus-alertmanager", "amtool")}
        missing = sorted(tool for tool, path in found.items() if path is None)
        if missing:
            raise ToolUnavailable(f"{', '.join(missing)} not installed (scripts/test installs them with apt-get)")
        return Toolchain("debian", found["prometheus"], found["promtool"], found["prometheus-alertmanager"],
                         found["amtool"])
    if name == "current":
        paths = go_binaries("prometheus", "alertmanager")
        return Toolchain("current", paths["prometheus"], paths["promtool"], paths["alertmanager"], paths["amtool"])
    raise ValueError(f"unknown toolchain {name!r}; known: {', '.join(TOOLCHAINS)}")


def path_dir(chain: Toolchain, base: Path) -> Path:
    """A directory of symlinks naming this toolchain's binaries as the tests call them."""
    directory = base / f"toolchain-{chain.name}"
    directory.mkdir(parents=True, exist_ok=True)
    for link, attribute in PROVIDED.items():
        target = directory / link
        if not target.exists():
            os.symlink(getattr(chain, attribute), target)
    return directory


@functools.cache
def prometheus_version(binary: str) -> str:
    """'3.16.0' / '2.42.0+ds' from ``prometheus --version``."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    text = out.stdout + out.stderr
    return text.split("version ", 1)[1].split()[0]
