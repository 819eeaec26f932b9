"""A few seconds of benchmarks/soak.py: flat-out simulated trading with concurrent scrapes.

The 10-minute run is a benchmark (``python benchmarks/soak.py``); this bounded
version catches gross leaks and scrape failures in every CI run.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SOAK = Path(__file__).resolve().parent.parent / "benchmarks" / "soak.py"


def load_soak():
    spec = importlib.util.spec_from_file_location("soak", SOAK)
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_short_soak_keeps_rss_flat_and_scrapes_working():
    soak = load_soak()
    lines: list[str] = []
    result = soak.soak(duration=6.0, rate=0.0, scrape_interval=0.2, windows=4, report=lines.append)
    print("\n" + "\n".join(lines))
    assert not result.errors, result.errors
    assert result.ticks > 1_000, "the trading loop barely ran"
    assert all(w.scrapes >= 3 for w in result.windows), "scrapes starved by the trading loop"
    # A leak of one small object per tick would be several MiB over these ticks.
    assert result.rss_growth_mb < 4.0, [w.rss_mb for w in result.windows]
    assert max(w.max_ms for w in result.windows) < 2_000, "a scrape took seconds"
