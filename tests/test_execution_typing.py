"""The execution, exchange, LLM and calibration API type-checks in a user's program under mypy --strict."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT

PROGRAM = ROOT / "tests" / "data" / "typing" / "execution_program.py"


def test_execution_api_passes_mypy_strict(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--strict", "--follow-imports=silent",
                             str(PROGRAM)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_wrong_call_is_an_error(tmp_path):
    wrong = tmp_path / "wrong.py"
    wrong.write_text("from tinywindow_otel.orders import order\n"
                     "order('binance', 'buy', quantity='lots')\n"
                     "from tinywindow_otel.llm import llm_call\n"
                     "llm_call('anthropic', model=3)\n")
    result = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--follow-imports=silent", str(wrong)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert 'argument "quantity" to "order" has incompatible type "str"' in result.stdout.lower() or \
        '"quantity"' in result.stdout, result.stdout
    assert "model" in result.stdout, result.stdout
