"""The Prometheus/Alertmanager version matrix as a fixture (see monitoring/toolchain.py).

    pytestmark = pytest.mark.usefixtures("toolchain")   # a whole module on both toolchains
    def test_x(toolchain): ... toolchain.promtool ...      # or one test, with the paths

Outside CI a toolchain that cannot be had skips its half of the matrix; under
CI=true it fails (the same rule as helpers.require_tool).
"""

from __future__ import annotations

import os

import pytest

from monitoring.stack_runs import CHECKS, SCENARIOS, Scenarios
from monitoring.toolchain import TOOLCHAINS, ToolUnavailable, collector_binary, path_dir, toolchain as resolve


def unavailable(message: str):
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(params=TOOLCHAINS)
def toolchain(request, monkeypatch, tmp_path_factory):
    """One of the toolchains, with its binaries first on PATH for this test."""
    try:
        chain = resolve(request.param)
    except ToolUnavailable as exc:
        unavailable(str(exc))
    directory = path_dir(chain, tmp_path_factory.getbasetemp())
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ.get('PATH', '')}")
    return chain


@pytest.fixture(scope="session")
def otelcol():
    """Path of the otelcol-tinywindow collector binary (built once, cached)."""
    try:
        return collector_binary()
    except ToolUnavailable as exc:
        unavailable(str(exc))


@pytest.fixture(scope="session")
def prometheus3():
    """The current toolchain (Prometheus 3.x, Alertmanager 0.35), for tests of Prometheus 3-only features."""
    try:
        return resolve("current")
    except ToolUnavailable as exc:
        unavailable(str(exc))


def pytest_collection_modifyitems(config, items):
    """The breach and calm stacks start now and run beside the whole suite; their checks go last.

    They spend minutes waiting on rule windows and Alertmanager (a breach run about
    four, calm as long as the session), next to no CPU: run one after the other,
    they alone took over five minutes of the suite.
    """
    checks = [item for item in items if item.path.name == CHECKS]
    if not checks or config.option.collectonly:
        return
    items[:] = [item for item in items if item.path.name != CHECKS] + checks
    names = {item.originalname for item in checks}
    config.stash[SCENARIOS] = Scenarios().launch(breach=any("breach" in n for n in names),
                                                 calm=any("calm" in n for n in names))


def pytest_unconfigure(config):
    scenarios = config.stash.get(SCENARIOS, None)
    if scenarios is not None:
        scenarios.close()
