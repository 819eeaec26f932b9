"""The repository needs nothing beside it: a clone in an empty directory passes the fast part of the suite."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

#: The fast part: every top-level test module except these long runs (builds, fuzzing,
#: soak, real-server stress), plus the monitoring tests that read the assets without
#: starting a stack (the others run Go-built tools and live stacks for minutes).
SLOW = (
    "test_self_contained.py",
    "test_packaging.py",
    "test_typing.py",
    "test_cardinality.py",
    "test_soak.py",
    "test_otlp.py",
    "test_exporters_fuzz.py",
    "test_metrics_fuzz.py",
    "test_server_hardening.py",
    "test_server_security.py",
)
STATIC_MONITORING = ("test_dashboards.py", "test_compose.py", "test_prometheus_config.py")


def fast_tests(root: Path) -> list[str]:
    top = sorted(p.name for p in (root / "tests").glob("test_*.py") if p.name not in SLOW)
    return [f"tests/{name}" for name in top] + [f"tests/monitoring/{name}" for name in STATIC_MONITORING
                                                 if (root / "tests" / "monitoring" / name).is_file()]


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True, timeout=120).stdout


@pytest.fixture
def clone(tmp_path) -> Path:
    """``git clone`` of the checkout into an empty directory, plus the working tree's uncommitted changes.

    The overlay makes the clone what ``git add -A && git commit`` would publish,
    so the test checks the code under test, committed or not.
    """
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.fail("the self-containment test needs git and a git checkout")
    target = tmp_path / "repo"
    git("clone", "--quiet", "--no-hardlinks", str(ROOT), str(target), cwd=tmp_path)
    tracked = set(git("ls-files", "-z").split("\0")) - {""}
    publishable = set(git("ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")) - {""}
    for name in publishable:
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    for name in tracked:
        if not (ROOT / name).exists():
            (target / name).unlink(missing_ok=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]  # nothing beside it
    return target


@pytest.mark.timeout(900)
def test_a_clone_in_an_empty_directory_passes_the_fast_tests(clone):
    # The clone's own code comes first on the path, for pytest and for every process it starts.
    env = {**os.environ, "PYTHONPATH": str(clone), "PYTHONDONTWRITEBYTECODE": "1"}
    where = subprocess.run([sys.executable, "-c", "import tinywindow_otel; print(tinywindow_otel.__file__)"],
                           cwd=clone, env=env, capture_output=True, text=True, timeout=60)
    assert Path(where.stdout.strip()).is_relative_to(clone), where.stdout + where.stderr

    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *fast_tests(clone)],
                            cwd=clone, env=env, capture_output=True, text=True, timeout=840)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert " passed" in summary and "failed" not in summary, summary
