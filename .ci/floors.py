"""Print pip constraints pinning every lower bound of the runtime and [otlp] dependencies.

    python .ci/floors.py > floors.txt && pip install -c floors.txt -e '.[test]'

CI installs exactly these versions in a second virtualenv and runs the tests
there, so a lower bound in pyproject.toml is a version the suite passed on.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

try:
    import tomllib  # Python >= 3.11
except ModuleNotFoundError:  # 3.9/3.10: the same parser, from PyPI
    try:
        import tomli as tomllib
    except ModuleNotFoundError:
        sys.exit(".ci/floors.py reads pyproject.toml: run it with Python >= 3.11, or `pip install tomli` first")

ROOT = Path(__file__).resolve().parent.parent
# Test-only packages whose versions must match the OTel floors (same release train).
FLOOR_FOLLOWERS = {"opentelemetry-proto", "opentelemetry-exporter-prometheus"}


def floors() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    requirements = [*project["dependencies"], *extras.get("otlp", [])]
    requirements += [r for r in extras.get("test", []) if re.split(r"[<>=!~\[ ;]", r)[0] in FLOOR_FOLLOWERS]
    pins = []
    for requirement in requirements:
        match = re.match(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*>=\s*([^,;\s]+)", requirement)
        if match:
            pins.append(f"{match.group(1)}=={match.group(2)}")
    return pins


if __name__ == "__main__":
    sys.stdout.write("\n".join(floors()) + "\n")
