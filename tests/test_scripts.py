"""scripts/bootstrap installs only when needed and says so (a recording stand-in for .venv/bin/python)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from conftest import ROOT

RECORDER = """#!/bin/sh
# Stands in for .venv/bin/python: records pip runs, imports succeed.
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then echo "$*" >> "$(dirname "$0")/../pip.log"; fi
exit 0
"""


def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "scripts").mkdir(parents=True)
    for name in ("scripts/bootstrap", "pyproject.toml", "setup.py"):
        shutil.copy2(ROOT / name, root / name)
    python = root / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(RECORDER)
    python.chmod(0o755)
    return root


def bootstrap(root: Path, *extras: str) -> tuple[str, list[str]]:
    result = subprocess.run([str(root / "scripts" / "bootstrap"), *extras], capture_output=True, text=True,
                            timeout=60, env=os.environ.copy())
    assert result.returncode == 0, result.stdout + result.stderr
    log = root / ".venv" / "pip.log"
    runs = log.read_text().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    return result.stdout, runs


def test_bootstrap_installs_once_then_only_when_the_project_or_extras_change(tmp_path):
    root = project(tmp_path)
    out, runs = bootstrap(root, "test")
    assert "installing tinywindow-otel[test]" in out
    assert runs[-1].endswith("install --quiet --disable-pip-version-check -e .[test]")

    for extras in (("test",), ()):  # an install with extras also serves a plain one
        out, runs = bootstrap(root, *extras)
        assert (out, runs) == ("", [])

    with (root / "pyproject.toml").open("a") as file:
        file.write("\n# changed\n")
    out, runs = bootstrap(root)
    assert "installing tinywindow-otel into .venv" in out
    assert runs[-1].endswith("-e .")
    out, runs = bootstrap(root, "otlp")  # a new extra
    assert "installing tinywindow-otel[otlp]" in out and runs
    assert bootstrap(root, "otlp") == ("", [])


def _floors(block: str) -> subprocess.CompletedProcess:
    """Run .ci/floors.py with the named modules made unimportable (as on an interpreter without them)."""
    import sys

    code = (f"import runpy, sys\nfor name in {block!r}.split(): sys.modules[name] = None\n"
            "sys.argv = ['.ci/floors.py']\nrunpy.run_path('.ci/floors.py', run_name='__main__')\n")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_ci_floors_pins_every_lower_bound_and_says_what_it_needs_without_tomllib():
    pins = _floors("").stdout.split()
    assert "opentelemetry-sdk==" + re.search(r'"opentelemetry-sdk>=([^,"]+)', (ROOT / "pyproject.toml").read_text()
                                             ).group(1) in pins
    without = _floors("tomllib tomli")  # Python 3.10 without tomli
    assert without.returncode == 1 and "Traceback" not in without.stderr
    assert "Python >= 3.11, or `pip install tomli`" in without.stderr
