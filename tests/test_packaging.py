"""The package as a pip user gets it: assets in the wheel, `assets export`, `stack` and the CLI from a fresh venv.

The wheel and sdist are built with ``python -m build`` (the wheel from the
sdist, as an index would), installed into a new venv outside the checkout, and
the installed ``tinywindow-otel`` is run from an empty directory.
"""

from __future__ import annotations

import filecmp
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import venv
import zipfile
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from helpers import fetch, free_port, require_tool, wait_until
from tinywindow_otel import __version__
from tinywindow_otel.cli import assets

USER_PROGRAM = ROOT / "tests" / "data" / "typing" / "user_program.py"


def tour() -> str:
    """The README's five-minute tour, which these tests follow from the wheel."""
    text = (ROOT / "README.md").read_text()
    return text.split("## Five-minute tour\n", 1)[1].split("\n## ", 1)[0]


def tour_blocks(language: str) -> list[str]:
    """The tour's fenced code blocks whose info string is ``language`` ("" for plain output)."""
    blocks, current, info = [], None, ""
    for line in tour().splitlines(keepends=True):
        if line.startswith("```"):
            if current is None:
                current, info = [], line[3:].strip()
            else:
                if info == language:
                    blocks.append("".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def tour_command(prefix: str) -> list[str]:
    """The tour's shell command starting with ``prefix``, as argv."""
    for block in tour_blocks("sh"):
        for line in block.splitlines():
            if line.startswith(prefix):
                return line.split("#")[0].split()
    raise AssertionError(f"the README's tour has no command starting with {prefix!r}")


# --- the asset selection and export, in-process -----------------------------------------------


def test_the_assets_are_every_config_file_of_the_asset_folders():
    names = assets.select(ROOT)
    assert assets.MARKER in names
    for expected in ("alerts/alertmanager.yml", "alerts/tests/tinywindow.rules.test.yml", "prometheus/prometheus.yml",
                     "dashboards/tinywindow-trading.json", "dashboards/provisioning/datasources/prometheus.yml",
                     "collector/otelcol.yaml", "docs/runbooks.md"):
        assert expected in names
    for directory in assets.ASSET_DIRS:
        for path in (ROOT / directory).rglob("*"):
            relative = path.relative_to(ROOT).as_posix()
            shipped = relative in names
            assert shipped == (path.is_file() and path.suffix in assets.ASSET_SUFFIXES), relative
    assert not [name for name in names if name.endswith((".go", ".mod", ".sum", ".py"))]


def test_an_editable_install_reads_the_assets_from_the_checkout():
    assert assets.path() == ROOT


def test_export_writes_a_copy_of_every_asset_and_a_readme(tmp_path):
    target = tmp_path / "monitoring"
    written = assets.export(target, version="9.9.9")
    assert sorted(p.relative_to(target).as_posix() for p in written) == sorted([*assets.select(ROOT), "README.md"])
    for name in assets.select(ROOT):
        assert filecmp.cmp(ROOT / name, target / name, shallow=False), name
    readme = (target / "README.md").read_text()
    assert "tinywindow-otel 9.9.9" in readme
    for name in ("prometheus/prometheus.yml", "alerts/alertmanager.yml", "dashboards/provisioning/"):
        assert f"`{name}`" in readme


def test_export_refuses_a_non_empty_folder_unless_forced(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        assets.export(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]
    assets.export(tmp_path, force=True)
    assert (tmp_path / "mine.txt").read_text() == "keep me"
    assert (tmp_path / assets.MARKER).is_file()


def test_the_export_readme_names_the_images_compose_uses():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    readme_images = set(re.findall(r"image: (\S+)", assets.EXPORT_README))
    for service in ("prometheus", "alertmanager", "grafana", "collector"):
        assert compose["services"][service]["image"] in readme_images, service


def test_the_exported_folder_passes_promtool_and_amtool(tmp_path):
    promtool = require_tool("promtool")
    amtool = require_tool("amtool")
    assets.export(tmp_path)
    for argv in ([promtool, "test", "rules", "alerts/tests/tinywindow.rules.test.yml"],
                 [amtool, "check-config", "alerts/alertmanager.yml"]):
        result = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr


# --- the built distributions, installed in a fresh venv -----------------------------------------


def publishable_copy(target: Path) -> Path:
    """The files git would publish (tracked or new, not ignored), copied: builds leave nothing in the checkout."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True, timeout=60).stdout
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    return target


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """sdist and wheel (built from the sdist) of the working tree, with ``python -m build``."""
    out = tmp_path_factory.mktemp("dist")
    source = publishable_copy(tmp_path_factory.mktemp("src"))
    result = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(source)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def installed(dist, tmp_path_factory) -> Path:
    """A new venv, outside the checkout, with only the wheel (and its dependencies) installed."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.create(env_dir, with_pip=True)
    wheel = next(dist.glob("*.whl"))
    result = subprocess.run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "--quiet",
                             "--disable-pip-version-check", str(wheel)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return env_dir


@pytest.fixture
def outside(tmp_path) -> Path:
    """An empty working directory: nothing of the checkout can be found from it."""
    work = tmp_path / "elsewhere"
    work.mkdir()
    return work


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TINYWINDOW_", "PYTHON"))}
    env.pop("VIRTUAL_ENV", None)
    return env


def run(installed: Path, *argv: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(installed / "bin" / "tinywindow-otel"), *argv], cwd=cwd,
                          env=env or clean_env(), capture_output=True, text=True, timeout=120)


def test_the_wheel_carries_the_assets_license_and_typing_marker(dist):
    wheel = next(dist.glob("*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(f"tinywindow_otel-{__version__}.dist-info/METADATA").decode()
    shipped = {name.removeprefix("tinywindow_otel/assets/") for name in names if name.startswith("tinywindow_otel/assets/")}
    assert shipped == set(assets.select(ROOT))
    assert "tinywindow_otel/py.typed" in names
    assert f"tinywindow_otel-{__version__}.dist-info/licenses/LICENSE" in names
    assert "License-Expression: Apache-2.0" in metadata
    assert f"Version: {__version__}" in metadata
    assert "Project-URL: Homepage, https://github.com/tinywindow/tinywindow-otel\n" in metadata  # the tour clones it
    assert "Project-URL: Changelog, https://github.com/tinywindow/tinywindow-otel/blob/main/CHANGELOG.md" in metadata
    assert not [n for n in names if n.endswith(".go") or n.startswith(("tests/", "benchmarks/"))]
    modules = {n for n in names if n.endswith(".py")}
    assert modules == {p.relative_to(ROOT).as_posix() for p in (ROOT / "tinywindow_otel").rglob("*.py")}


def test_a_wheel_built_straight_from_the_checkout_is_the_same(dist, tmp_path):
    """``pip install .`` (the Dockerfile) builds from the tree, not from the sdist: same files."""
    source = publishable_copy(tmp_path / "src")
    wheels = tmp_path / "wheels"
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--disable-pip-version-check",
                             "--wheel-dir", str(wheels), str(source)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    def names(wheel: Path) -> set[str]:
        with zipfile.ZipFile(wheel) as archive:
            return {n for n in archive.namelist() if ".dist-info/" not in n}

    assert names(next(wheels.glob("*.whl"))) == names(next(dist.glob("*.whl")))


def test_the_sdist_carries_the_same_assets_once(dist):
    sdist = next(dist.glob("*.tar.gz"))
    prefix = f"tinywindow_otel-{__version__}/"
    with tarfile.open(sdist) as archive:
        names = {m.name.removeprefix(prefix) for m in archive.getmembers() if m.isfile()}
    assert set(assets.select(ROOT)) <= names
    assert {"LICENSE", "CHANGELOG.md", "setup.py", "pyproject.toml", "tinywindow_otel/py.typed"} <= names
    assert not [n for n in names if n.startswith("tinywindow_otel/assets/")]  # one copy: the top-level one


def test_installed_version_and_assets_path(installed, outside):
    version = run(installed, "--version", cwd=outside)
    assert version.returncode == 0 and version.stdout.strip() == f"tinywindow-otel {__version__}"
    where = run(installed, "assets", "path", cwd=outside)
    assert where.returncode == 0, where.stderr
    path = Path(where.stdout.strip())
    assert path.is_relative_to(installed) and path.name == "assets"
    assert not path.is_relative_to(ROOT)


def test_the_tour_program_serves_what_the_readme_shows(installed, outside):
    [program] = tour_blocks("python")
    [expected] = [block for block in tour_blocks("") if block.startswith("tinywindow_trades_total")]
    grep = re.search(r"grep -E '(.+?)'", tour()).group(1)
    port = free_port()
    assert "port=8000" in program
    (outside / "tour.py").write_text(program.replace("port=8000", f"port={port}"))
    process = subprocess.Popen([str(installed / "bin" / "python"), "tour.py"], cwd=outside, env=clean_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "serving" in process.stdout.readline()  # printed once the server is up
        body = fetch(f"http://127.0.0.1:{port}/metrics")
        shown = [line for line in body.splitlines() if re.match(grep, line)]
        assert shown == expected.splitlines()
        process.send_signal(signal.SIGINT)
        assert process.wait(20) == 0, process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_assets_export_from_the_wheel_writes_the_repository_files(installed, outside):
    argv = tour_command("tinywindow-otel assets export")
    assert argv[1:] == ["assets", "export", "monitoring"]
    result = run(installed, *argv[1:], cwd=outside)
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and "README.md" in result.stdout
    for name in assets.select(ROOT):
        assert filecmp.cmp(ROOT / name, outside / "monitoring" / name, shallow=False), name
    assert f"tinywindow-otel {__version__}" in (outside / "monitoring" / "README.md").read_text()
    again = run(installed, "assets", "export", "monitoring", cwd=outside)
    assert again.returncode == 2
    assert again.stderr.splitlines()[0].startswith("tinywindow-otel assets export: error: ")
    assert again.stderr.splitlines()[1] == "hint: choose a new folder, or pass --force"


def test_a_missing_otlp_extra_is_one_line_and_a_hint(installed, outside):
    env = {**clean_env(), "OTEL_METRICS_EXPORTER": "otlp"}
    result = run(installed, "demo", "--port", "0", cwd=outside, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("tinywindow-otel demo: error: ") and "otlp" in lines[0]
    assert lines[1] == "hint: install the OTLP exporter: pip install 'tinywindow-otel[otlp]' (or unset OTEL_METRICS_EXPORTER)"


def test_a_user_program_type_checks_against_the_installed_wheel(installed, outside):
    program = outside / "user_program.py"
    program.write_text(USER_PROGRAM.read_text())
    result = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--strict",
                             "--python-executable", str(installed / "bin" / "python"), program.name],
                            cwd=outside, capture_output=True, text=True, timeout=300)
    # Installed with py.typed: no "missing library stubs", and the user's code is fully checked.
    assert result.returncode == 0, result.stdout + result.stderr


def test_stack_from_the_wheel_fires_an_alert_and_stops_cleanly(installed, outside):
    """The README's tour: the stack from a pip install, outside any checkout, until a page is printed."""
    require_tool("prometheus")
    require_tool("prometheus-alertmanager")
    argv = tour_command("tinywindow-otel stack")
    [shown] = [block.splitlines() for block in tour_blocks("") if "alertmanager -> " in block]
    assert any("[FIRING]" in line and "(critical)" in line for line in shown), shown
    assert argv[:2] == ["tinywindow-otel", "stack"], argv
    process = subprocess.Popen(
        [str(installed / "bin" / argv[0]), *argv[1:],
         "--port", "0", "--prometheus-port", "0", "--alertmanager-port", "0"],
        cwd=outside, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True)
    reader.start()
    output: list[str] = []

    def page_printed() -> bool:
        while not lines.empty():
            output.append(lines.get())
        if process.poll() is not None:
            raise AssertionError("stack exited early:\n" + "".join(output))
        printed = {line.rstrip("\n") for line in output}
        return all(line in printed for line in shown)

    try:
        wait_until(page_printed, timeout=240, interval=0.2, what=f"the tour's lines printed by the stack: {shown}")
        urls = dict(re.findall(r"^\s+(prometheus|alertmanager)\s+(http://\S+)$", "".join(output), flags=re.M))
        assert set(urls) == {"prometheus", "alertmanager"}, "".join(output)
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    reader.join(10)
    while not lines.empty():
        output.append(lines.get())
    text = "".join(output)
    assert "Traceback" not in text
    assert "tinywindow-otel stack: stopped" in text
    for url in urls.values():
        host, port = re.match(r"http://([^:/]+):(\d+)", url).groups()
        with socket.socket() as sock:
            sock.settimeout(1)
            assert sock.connect_ex((host, int(port))) != 0, f"{url} still listening after stop"
