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
| `prometheus/prometheus.yml` | scrape jobs `tinywindow` (target `app:8000`), `otel-collector` (`collector:8888`, found by DNS while the collector runs), `alertmanager` (`alertmanager:9093`); rules; Alertmanager | `/etc/prometheus/prometheus.yml` |
| `prometheus/*.yml` (others) | blocks for TLS scraping and Prometheus 3's OTLP receiver (see the comment atop each) | merge into `prometheus.yml` |
| `alerts/` | the alert rules (`*.rules.yml`) and their `promtool` tests | `/etc/prometheus/alerts` |
| `alerts/alertmanager.yml` | routing by severity to PagerDuty, Slack, a webhook relay, and the Watchdog to a dead-man's switch | `/etc/alertmanager/alertmanager.yml` |
| `alerts/*.example` | placeholders for the three secret files Alertmanager reads (below) | `/run/secrets/<name without .example>` |
| `dashboards/*.json` | Grafana dashboards `tinywindow-trading`, `-risk`, `-system`, `-execution`, `-agents` | `/etc/grafana/dashboards/tinywindow` |
| `dashboards/provisioning/` | Grafana datasource (`http://prometheus:9090`) and dashboard provider | `/etc/grafana/provisioning` |
| `collector/otelcol.yaml` | OpenTelemetry Collector: OTLP in, Prometheus and remote-write out | `/etc/otelcol-contrib/config.yaml` |
| `docs/runbooks.md` | what to do when each alert fires | (read it) |

## Receivers and the secrets to create

`alerts/alertmanager.yml` holds no secret: Alertmanager reads each one from a
file at send time. Create these files (one value, no quotes) and mount them
where the configuration looks for them:

| receiver | gets | secret file (`alertmanager.yml` key) | content |
|---|---|---|---|
| `trading-pager` | `severity="critical"` (and AlertmanagerNotificationsFailing) | `/run/secrets/pagerduty-routing-key` (`pagerduty_configs.routing_key_file`) | the PagerDuty Events API v2 routing (integration) key |
| `trading-chat` | `severity="warning"` (and AlertmanagerNotificationsFailing) | `/run/secrets/slack-api-url` (`slack_configs.api_url_file`) | the Slack incoming-webhook URL (channel `#trading-alerts`) |
| `trading-pager`, `trading-chat`, `deadmans-switch` | a copy of each notification, by webhook to `http://alert-relay:5001/page`, `/chat`, `/deadmans-switch` | `/run/secrets/webhook-token` (`webhook_configs.http_config.authorization.credentials_file`) | the bearer token the relay expects |

The `Watchdog` alert always fires and goes only to `deadmans-switch`, every
minute: point that receiver at a dead-man's-switch service (Healthchecks.io,
PagerDuty or Opsgenie heartbeats, or the relay below) that pages when the
notifications **stop**: that is when Prometheus, its rules or Alertmanager are down.

The webhook URLs are not secret (Alertmanager 0.25 has no `url_file` for
webhooks): the relay authenticates the bearer token. Replace
`http://alert-relay:5001` by your own receiver, or run the minimal one of the
project's repository (`alerts/relay.py` there, standard library only: checks
the token, logs one JSON line per alert, turns unhealthy when the Watchdog
stops). Drop a receiver you do not use from `alertmanager.yml` instead of
leaving its secret file empty.

Before using it, also change in `prometheus/prometheus.yml` the scrape targets to
your application's, the collector's and Alertmanager's `host:port`.

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
    secrets: [pagerduty-routing-key, slack-api-url, webhook-token]
  grafana:
    image: grafana/grafana:11.1.3
    volumes:
      - ./dashboards/provisioning:/etc/grafana/provisioning:ro
      - ./dashboards:/etc/grafana/dashboards/tinywindow:ro
  collector:   # only if your apps push OTLP
    image: otel/opentelemetry-collector-contrib:0.165.1
    command: ["--config=/etc/otelcol-contrib/config.yaml"]
    volumes:
      - ./collector/otelcol.yaml:/etc/otelcol-contrib/config.yaml:ro
secrets:   # your real files, outside this folder; never the .example placeholders
  pagerduty-routing-key:
    file: /etc/tinywindow/secrets/pagerduty-routing-key
  slack-api-url:
    file: /etc/tinywindow/secrets/slack-api-url
  webhook-token:
    file: /etc/tinywindow/secrets/webhook-token
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
