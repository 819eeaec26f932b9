"""mypy on the public modules, and a user's program checked strictly against the public API (py.typed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import ROOT

USER_PROGRAM = ROOT / "tests" / "data" / "typing" / "user_program.py"


def mypy(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_public_modules_pass_mypy():
    result = mypy()  # the files and options in pyproject.toml [tool.mypy]
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("Success")


def test_a_user_program_passes_mypy_strict():
    # Internals are not the user's concern (silent), but every public signature they call is checked.
    result = mypy("--strict", "--follow-imports=silent", str(USER_PROGRAM))
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_sees_the_public_types(tmp_path):
    """A wrong call in user code is an error, so the annotations are really used (not Any)."""
    program = tmp_path / "wrong.py"
    program.write_text(
        "from tinywindow_otel import MetricsServer, trade_pnl_usd, trades_total\n"
        "from tinywindow_otel.metrics import REGISTRY\n"
        "trade_pnl_usd.observe('a lot')\n"
        "MetricsServer(port='8000')\n"
        "trade_pnl_usd.no_such_method()\n"
        "trades_total.labels('filled', 'BTC/USDT').observe(1.0)\n"  # labels() returns the kind's series
        "REGISTRY.gauge('win_rate').observe(1.0)\n"  # the registry's typed lookups
    )
    result = mypy("--follow-imports=silent", str(program))
    assert result.returncode == 1, result.stdout + result.stderr
    errors = {line.split(":")[1] for line in result.stdout.splitlines() if ": error:" in line}
    assert errors == {"3", "4", "5", "6", "7"}, result.stdout
