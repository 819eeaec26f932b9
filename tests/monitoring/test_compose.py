"""compose.yaml and .env.example, validated by the real loaders (no docker engine needed): Compose v2's
(compose-go v2, built as tools/compose by scripts/build-go-tools) and `docker-compose config` (v1)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from helpers import require_tool
from monitoring.assets import PROMETHEUS, ROOT
from monitoring.toolchain import ToolUnavailable, go_binaries

COMPOSE = ROOT / "compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
COLLECTOR_CONFIG = ROOT / "collector" / "otelcol.yaml"
# Variables compose reads from the environment: the tests give them explicitly.
OWN_VARIABLES = ("GRAFANA_", "COMPOSE_", "ALERTMANAGER_", "PROMETHEUS_REMOTE_WRITE_URL")


def clean_env(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith(OWN_VARIABLES)}, **extra}


def compose(*args: str, env_file: str | os.PathLike = ENV_EXAMPLE) -> subprocess.CompletedProcess:
    argv = [require_tool("docker-compose"), "-f", str(COMPOSE), "--project-directory", str(ROOT),
            "--env-file", str(env_file)]
    return subprocess.run([*argv, *args], capture_output=True, text=True, timeout=60, env=clean_env())


@pytest.fixture(scope="module")
def compose_config() -> str:
    """tools/compose's compose-config: compose-go v2 loading, interpolating, validating, normalising."""
    try:
        return go_binaries("compose")["compose-config"]
    except ToolUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(str(exc))
        pytest.skip(str(exc))


def compose_v2(binary: str, *args: str, file: Path = COMPOSE, env_file: Path | None = ENV_EXAMPLE,
               **environ: str) -> subprocess.CompletedProcess:
    argv = [binary, "-f", str(file), "--project-directory", str(ROOT)]
    if env_file is not None:
        argv += ["--env-file", str(env_file)]
    return subprocess.run([*argv, *args], capture_output=True, text=True, timeout=60, env=clean_env(**environ))


@pytest.fixture(scope="module")
def loaded(compose_config) -> dict:
    """The Compose v2 model with every profile enabled."""
    result = compose_v2(compose_config, "--profile", "*")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def env_example() -> dict[str, str]:
    pairs = [line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if line and not line.startswith("#")]
    return dict(pairs)


@pytest.fixture(scope="module")
def resolved() -> dict:
    result = compose("--profile", "collector", "config")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


PUSH_PROFILE = {"collector", "app-push"}


def test_docker_compose_config_is_valid(resolved):
    assert set(resolved["services"]) == {"app", "prometheus", "grafana", "alertmanager", "alert-relay"} | PUSH_PROFILE


def test_collector_and_the_pushing_app_are_only_in_their_profile(resolved):
    for name, service in resolved["services"].items():
        assert service.get("profiles") == (["collector"] if name in PUSH_PROFILE else None), name


def v2_ports(service: dict) -> list[str]:
    return [f"{p['host_ip']}:{p['published']}:{p['target']}/{p['protocol']}" for p in service.get("ports", [])]


def test_compose_v2_loads_every_profile_as_v1_does(loaded, resolved):
    """compose-go v2 (what `docker compose` runs) accepts the file and normalises it to the same services."""
    assert set(loaded["services"]) == set(resolved["services"])
    for name, v1 in resolved["services"].items():
        v2 = loaded["services"][name]
        assert v2["image"] == v1["image"], name
        assert v2.get("command") == v1.get("command"), name
        assert v2.get("environment", {}) == v1.get("environment", {}), name
        assert v2.get("profiles") == v1.get("profiles"), name
        assert v2_ports(v2) == v1.get("ports", []), name
        assert {k: d["condition"] for k, d in v2.get("depends_on", {}).items()} == {
            k: d["condition"] for k, d in v1.get("depends_on", {}).items()}, name
        assert sorted(s["source"] for s in v2.get("secrets", [])) == sorted(
            s["source"] for s in v1.get("secrets", [])), name
    assert set(loaded["volumes"]) == set(resolved["volumes"])
    assert {k: v["file"] for k, v in loaded["secrets"].items()} == {k: v["file"] for k, v in resolved["secrets"].items()}


def test_compose_v2_without_a_profile_is_the_scrape_only_recipe(compose_config):
    result = compose_v2(compose_config)
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert set(services) == {"app", "prometheus", "grafana", "alertmanager", "alert-relay"}
    assert services["app"]["environment"]["OTEL_METRICS_EXPORTER"] == "prometheus"


def test_compose_v2_interpolates_secrets_from_the_environment(compose_config, tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    # From the environment alone (no .env): the password and the collector's default target.
    result = compose_v2(compose_config, "--profile", "*", env_file=empty, GRAFANA_ADMIN_PASSWORD="from-the-env")
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "from-the-env"
    assert services["grafana"]["environment"]["GF_SECURITY_ADMIN_USER"] == "admin"
    assert services["collector"]["environment"]["PROMETHEUS_REMOTE_WRITE_URL"] == "http://prometheus:9090/api/v1/write"
    # The environment wins over the env file, as with docker compose.
    result = compose_v2(compose_config, GRAFANA_ADMIN_PASSWORD="from-the-env", PROMETHEUS_REMOTE_WRITE_URL="x")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "from-the-env"
    # Neither: refused, naming the variable and where to look.
    result = compose_v2(compose_config, env_file=empty)
    assert result.returncode != 0
    assert "GRAFANA_ADMIN_PASSWORD" in result.stderr and ".env.example" in result.stderr
    # An empty value is no password either (`:?`).
    result = compose_v2(compose_config, env_file=empty, GRAFANA_ADMIN_PASSWORD="")
    assert result.returncode != 0 and "GRAFANA_ADMIN_PASSWORD" in result.stderr


def test_compose_v2_validates_against_the_compose_schema(compose_config, tmp_path):
    # The checks above could not pass by accident: the loader refuses what the schema does not allow.
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("    restart: unless-stopped\n", "    restart: unless-stopped\n"
                                                  "    restart_policy_typo: always\n", 1))
    result = compose_v2(compose_config, file=broken)
    assert result.returncode != 0
    assert "restart_policy_typo" in result.stderr


def go_module_version(gomod: str, module: str) -> str:
    for line in (ROOT / gomod).read_text().splitlines():
        parts = line.split()
        if parts[:1] == [module] or parts[:2] == ["require", module]:
            return parts[-1]
    raise AssertionError(f"{module} not required in {gomod}")


def test_images_are_the_versions_the_tests_build():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    prometheus = go_module_version("tools/prometheus/go.mod", "github.com/prometheus/prometheus")  # v0.316.0
    major_minor = prometheus.split(".")[1]                                                       # 316 -> 3.16
    assert services["prometheus"]["image"] == f"prom/prometheus:v{major_minor[0]}.{int(major_minor[1:])}.{prometheus.split('.')[2]}"
    alertmanager = go_module_version("tools/alertmanager/go.mod", "github.com/prometheus/alertmanager")
    assert services["alertmanager"]["image"] == f"prom/alertmanager:{alertmanager}"
    # The contrib image of release X is built from the contrib modules at vX (its core modules
    # may be a patch behind, as ours are: core v0.165.0): the image is the contrib release.
    contrib = {go_module_version("collector/go.mod", f"github.com/open-telemetry/opentelemetry-collector-contrib/{m}")
               for m in ("exporter/prometheusexporter", "exporter/prometheusremotewriteexporter",
                         "extension/healthcheckextension", "processor/resourceprocessor")}
    assert len(contrib) == 1, f"contrib modules at one release: {contrib}"
    repo, _, tag = services["collector"]["image"].rpartition(":")
    assert repo == "otel/opentelemetry-collector-contrib"
    assert f"v{tag}" == contrib.pop(), "the collector image is the release of the contrib modules we build"


def scrape_targets(config: dict) -> dict[str, set[str]]:
    """{"static" | "dns": {"host:port", ...}} of prometheus.yml."""
    found: dict[str, set[str]] = {"static": set(), "dns": set()}
    for job in config["scrape_configs"]:
        found["static"] |= {t for sc in job.get("static_configs", []) for t in sc["targets"]}
        found["dns"] |= {f"{name}:{sd['port']}" for sd in job.get("dns_sd_configs", []) for name in sd["names"]}
    return found


def test_profile_only_services_are_discovered_not_listed(resolved):
    """A static target is scraped whether or not it runs: one naming a service of a profile would be a
    target that is down for ever without the profile (up == 0). Those are found by DNS instead, which
    yields no target while the service is not running."""
    config = yaml.safe_load(PROMETHEUS.read_text())
    targets = scrape_targets(config)
    services = resolved["services"]
    for target in targets["static"]:
        host = target.rsplit(":", 1)[0]
        assert host == "localhost" or (host in services and "profiles" not in services[host]), target
    for target in targets["dns"]:
        host = target.rsplit(":", 1)[0]
        assert host in services and services[host].get("profiles"), f"{target}: list it statically"
    # The collector's own metrics, on the port its telemetry listens on.
    telemetry = yaml.safe_load(COLLECTOR_CONFIG.read_text())["service"]["telemetry"]["metrics"]["readers"][0]
    port = telemetry["pull"]["exporter"]["prometheus"]["port"].rsplit(":-", 1)[1].rstrip("}")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["otel-collector"]["dns_sd_configs"] == [
        {"names": ["collector"], "type": "A", "port": int(port), "refresh_interval": "30s"}]


def test_every_app_is_ingested_exactly_once(resolved):
    """Scraped apps are tinywindow targets and do not push; pushing apps are not scraped;
    the collector remote-writes to this Prometheus, so its :8889 exporter must not be scraped too."""
    found = scrape_targets(yaml.safe_load(PROMETHEUS.read_text()))
    targets = found["static"] | found["dns"]
    collector_env = resolved["services"]["collector"]["environment"]
    assert collector_env["PROMETHEUS_REMOTE_WRITE_URL"] == "http://prometheus:9090/api/v1/write"
    assert "--web.enable-remote-write-receiver" in resolved["services"]["prometheus"]["command"]
    assert "collector:8889" not in targets
    assert "collector:8888" in targets  # the collector's own metrics
    for name in ("app", "app-push"):
        env = resolved["services"][name]["environment"]
        exporters = set(env["OTEL_METRICS_EXPORTER"].split(","))
        scraped = f"{name}:8000" in targets
        pushes = "otlp" in exporters
        assert scraped != pushes, f"{name}: scraped={scraped}, pushes={pushes}: stored {'twice' if scraped else 'never'}"
        assert scraped == ("prometheus" in exporters), name
        if pushes:
            assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector:4318"
            # 4 samples in the 1m windows; the identity Prometheus will show as instance.
            assert int(env["OTEL_METRIC_EXPORT_INTERVAL"]) <= 15_000
            assert "service.instance.id=" in env["OTEL_RESOURCE_ATTRIBUTES"]


def test_ports_on_loopback(resolved):
    expected = {"app": 8000, "prometheus": 9090, "grafana": 3000, "alertmanager": 9093}
    assert "ports" not in resolved["services"]["app-push"]  # pushes; nothing to reach from the host
    for service, port in expected.items():
        published = [p for p in resolved["services"][service]["ports"] if str(p).startswith(f"127.0.0.1:{port}:{port}")]
        assert published, f"{service} should publish 127.0.0.1:{port}"
    collector_ports = " ".join(resolved["services"]["collector"]["ports"])
    assert "127.0.0.1:4317:4317" in collector_ports and "127.0.0.1:4318:4318" in collector_ports


def test_grafana_password_comes_from_env_with_a_documented_default(resolved):
    password = env_example()["GRAFANA_ADMIN_PASSWORD"]
    assert password
    assert resolved["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == password
    assert password not in COMPOSE.read_text()


def test_compose_refuses_to_start_without_a_grafana_password(tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = compose("config", env_file=empty)
    assert result.returncode != 0
    assert "GRAFANA_ADMIN_PASSWORD" in result.stderr


def test_images_are_pinned():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    for name, service in services.items():
        image = service["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and any(c.isdigit() for c in tag), f"{name}: {image} is not pinned"


def test_healthchecks(resolved):
    for name, service in resolved["services"].items():
        check = service.get("healthcheck")
        if name == "collector":
            # Distroless image: no command to run inside; the health_check extension is exposed instead.
            assert check in ({"disable": True}, {"test": ["NONE"]})  # docker-compose 1.x normalises it
            assert any(":13133" in str(p) for p in service["ports"])
        else:
            assert check and check["test"][0] == "CMD", name


def test_named_volumes_and_mounted_files_exist(resolved):
    assert {"prometheus-data", "alertmanager-data", "grafana-data"} <= set(resolved["volumes"])
    for name, service in resolved["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
            if source.startswith("/"):
                assert os.path.exists(source), f"{name} mounts missing {source}"


def test_prometheus_mounts_rules_where_its_config_looks(resolved):
    volumes = resolved["services"]["prometheus"]["volumes"]
    assert any(v.endswith(":/etc/prometheus/alerts:ro") for v in volumes)
    assert any(v.endswith("prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro") for v in volumes)


def test_alertmanager_secret_is_a_placeholder_file(resolved):
    secret = resolved["secrets"]["webhook-token"]["file"]
    assert os.path.exists(secret)
    assert secret.endswith(env_example()["ALERTMANAGER_WEBHOOK_TOKEN_FILE"].lstrip("."))


def webhook_urls() -> list[str]:
    config = yaml.safe_load((ROOT / "alerts" / "alertmanager.yml").read_text())
    return [hook["url"] for receiver in config["receivers"] for hook in receiver.get("webhook_configs", [])]


def test_every_webhook_alertmanager_sends_to_has_a_relay_service(resolved):
    """alerts/alertmanager.yml sends webhooks to http://alert-relay:5001/<receiver>: that service must exist,
    listen on that port, serve those paths and check the token file Alertmanager sends."""
    from urllib.parse import urlsplit

    relay_script = ROOT / "alerts" / "relay.py"
    spec = importlib.util.spec_from_file_location("alert_relay", relay_script)
    relay = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(relay)

    urls = [urlsplit(url) for url in webhook_urls()]
    assert urls, "alertmanager.yml has no webhook receiver"
    services = resolved["services"]
    command = services["alert-relay"]["command"]
    for url in urls:
        assert url.hostname in services, f"{url.geturl()}: no compose service {url.hostname}"
        assert url.hostname == "alert-relay"
        assert command[command.index("--port") + 1] == str(url.port)
        assert str(url.port) in [str(p) for p in services["alert-relay"]["expose"]]
        assert url.path.strip("/") in relay.RECEIVERS, url.geturl()
    # The relay runs the mounted script, in an image this compose file builds.
    script = command[command.index("python") + 1]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["alert-relay"]["volumes"]}
    assert mounts[script] == str(relay_script)
    assert services["alert-relay"]["image"] == services["app"]["image"] and "build" in services["alert-relay"]
    # Same secret on both sides of the bearer token.
    config = yaml.safe_load((ROOT / "alerts" / "alertmanager.yml").read_text())
    token_files = {hook["http_config"]["authorization"]["credentials_file"]
                   for receiver in config["receivers"] for hook in receiver.get("webhook_configs", [])}
    token_file = command[command.index("--token-file") + 1]
    assert token_files == {token_file}
    secret = token_file.rsplit("/", 1)[1]
    for service in ("alert-relay", "alertmanager"):
        assert secret in [s["source"] for s in services[service]["secrets"]], service
    # Health is the dead-man's switch, probed on the relay's own port; Alertmanager starts after it.
    assert f"127.0.0.1:{urls[0].port}/healthz" in " ".join(services["alert-relay"]["healthcheck"]["test"])
    assert "alert-relay" in services["alertmanager"]["depends_on"]
    assert "ports" not in services["alert-relay"]  # reached by Alertmanager only
