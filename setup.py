"""Build hook: the monitoring assets travel in the wheel as package data.

The repository keeps one copy of each asset at its top level (alerts/,
prometheus/, dashboards/, collector/, docs/runbooks.md); this copies them into
the built package as ``tinywindow_otel/assets/...`` (see docs/decisions.md).
Everything else about the build is in pyproject.toml.
"""

import importlib.util
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

ROOT = Path(__file__).resolve().parent


def _assets_module():
    # Loaded by path: importing the package would need its dependencies at build time.
    spec = importlib.util.spec_from_file_location("_tinywindow_assets", ROOT / "tinywindow_otel" / "cli" / "assets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _asset_names():
    assets = _assets_module()
    names = assets.select(ROOT)
    if assets.MARKER not in names:
        raise SystemExit(f"setup.py: {assets.MARKER} is missing from {ROOT}; cannot build without the assets")
    return names


class build_py_with_assets(build_py):  # noqa: N801 - setuptools command naming
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the assets from the checkout
        target = Path(self.build_lib) / "tinywindow_otel" / "assets"
        for name in _asset_names():
            destination = target / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / name, destination)


class sdist_with_assets(sdist):  # noqa: N801
    """The sdist carries the same asset files at the top level, so a wheel built from it has them."""

    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        for name in _asset_names():
            destination = Path(base_dir) / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / name, destination)


setup(cmdclass={"build_py": build_py_with_assets, "sdist": sdist_with_assets})
