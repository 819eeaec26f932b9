"""The monitoring assets (rules, Alertmanager, Prometheus, Grafana, collector, runbooks) and where they are.

    tinywindow-otel assets export monitoring/   # a ready-to-mount folder, with a README
    tinywindow-otel assets path                 # where the installed copy lives

The repository keeps one copy of each asset at its top level (``alerts/``,
``prometheus/``, ...). A wheel carries the same files under
``tinywindow_otel/assets/`` (``setup.py`` copies them at build time, using
:func:`select` from this module), so the layout below either root is the same.

Only the standard library is imported here: ``setup.py`` loads this file by
path, before the package's dependencies exist.
"""

from __future__ import annotations

import shutil
from pathlib import Path

#: Directories whose configuration files are assets, and single files that are.
ASSET_DIRS = ("alerts", "prometheus", "dashboards", "collector")
ASSET_FILES = ("docs/runbooks.md",)
#: Configuration and documentation only: Go sources or built binaries in collector/ are not assets.
ASSET_SUFFIXES = (".yml", ".yaml", ".json", ".md", ".example")
#: The file whose presence marks a root holding the assets.
MARKER = "alerts/tinywindow.rules.yml"

_PACKAGE = Path(__file__).resolve().parents[1]

EXPORT_README = """\
# TinyWindow monitoring

Written by `tinywindow-otel assets export` (tinywindow-otel {version}). Mount these
files into the monitoring containers; paths are relative to this folder.

| path | what | mount it at |
|---|---|---|
| `prometheus/prometheus.yml` | scrape job `tinywindow` (target `app:8000`), rules, Alertmanager | `/etc/prometheus/prometheus.yml` |
| `prometheus/*.yml` (others) | blocks for TLS scraping and Prometheus 3's OTLP receiver (see the comment atop each) | merge into `prometheus.yml` |
| `alerts/` | the alert rules (`*.rules.yml`) and their `promtool` tests | `/etc/prometheus/alerts` |
| `alerts/alertmanager.yml` | routing by severity: PagerDuty, Slack and webhook receivers | `/etc/alertmanager/alertmanager.yml` |
| `alerts/*.example` | placeholders for the secrets Alertmanager reads (PagerDuty key, Slack URL, webhook token) | `/run/secrets/<name without .example>` |
| `dashboards/*.json` | Grafana dashboards `tinywindow-trading`, `-risk`, `-system`, `-execution`, `-agents` | `/etc/grafana/dashboards/tinywindow` |
| `dashboards/provisioning/` | Grafana datasource (`http://prometheus:9090`) and dashboard provider | `/etc/grafana/provisioning` |
| `collector/otelcol.yaml` | OpenTelemetry Collector: OTLP in, Prometheus and remote-write out | `/etc/otelcol-contrib/config.yaml` |
| `docs/runbooks.md` | what to do when each alert fires | (read it) |

Before using it, change in `prometheus/prometheus.yml` the scrape target to your
application's `host:port`, in `alerts/alertmanager.yml` the webhook address
(`http://alert-relay:5001`) to your own receiver, and put real secrets in the
files `alerts/alertmanager.yml` names (never the `.example` placeholders).

With Docker Compose, for example:

```yaml
services:
  prometheus:
    image: prom/prometheus:v3.16.0
    volumes:
      - ./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro
      - ./alerts:/etc/prometheus/alerts:ro
  alertmanager:
    image: prom/alertmanager:v0.35.0
    volumes:
      - ./alerts/alertmanager.yml:/etc/alertmanager/alertmanager.yml:ro
  grafana:
    image: grafana/grafana:11.1.3
    volumes:
      - ./dashboards/provisioning:/etc/grafana/provisioning:ro
      - ./dashboards:/etc/grafana/dashboards/tinywindow:ro
  collector:   # only if your apps push OTLP
    image: otel/opentelemetry-collector-contrib:0.165.0
    command: ["--config=/etc/otelcol-contrib/config.yaml"]
    volumes:
      - ./collector/otelcol.yaml:/etc/otelcol-contrib/config.yaml:ro
```

Check your changes with:

    promtool check config prometheus/prometheus.yml
    promtool test rules alerts/tests/tinywindow.rules.test.yml
    amtool check-config alerts/alertmanager.yml

Without Docker, `tinywindow-otel stack --assets .` run in this folder starts a
demo, a local Prometheus and Alertmanager with these rules.
"""


class AssetsNotFound(FileNotFoundError):
    """Neither an installed copy nor a source checkout of the assets was found."""


def select(root: str | Path) -> list[str]:
    """The asset files under ``root``, as sorted POSIX paths relative to it."""
    root = Path(root)
    found = {name for name in ASSET_FILES if (root / name).is_file()}
    for directory in ASSET_DIRS:
        for path in (root / directory).rglob("*"):
            if path.is_file() and path.suffix in ASSET_SUFFIXES and "__pycache__" not in path.parts:
                found.add(path.relative_to(root).as_posix())
    return sorted(found)


def path() -> Path:
    """The directory holding ``alerts/``, ``prometheus/``, ... for this installation.

    A wheel installation has them in the package (``tinywindow_otel/assets``);
    an editable installation reads them from the checkout it was installed from.
    """
    installed = _PACKAGE / "assets"
    checkout = _PACKAGE.parent
    for candidate in (installed, checkout):
        if (candidate / MARKER).is_file():
            return candidate
    raise AssetsNotFound(f"no {MARKER} under {installed} or {checkout}: "
                         "reinstall tinywindow-otel (the wheel carries the assets)")


def export(destination: str | Path, *, force: bool = False, version: str = "") -> list[Path]:
    """Copy every asset and a README into ``destination``; return the files written.

    Refuses a non-empty destination unless ``force`` (then files are overwritten,
    others left alone), so an edited monitoring folder is never clobbered by accident.
    """
    source = path()
    destination = Path(destination)
    if destination.exists() and not destination.is_dir():
        raise FileExistsError(f"{destination} exists and is not a directory")
    if destination.is_dir() and any(destination.iterdir()) and not force:
        raise FileExistsError(f"{destination} is not empty (use --force to overwrite the asset files in it)")
    written = []
    for name in select(source):
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, target)
        written.append(target)
    readme = destination / "README.md"
    readme.write_text(EXPORT_README.format(version=version or "unknown"), encoding="utf-8")
    written.append(readme)
    return written
