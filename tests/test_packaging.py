"""Packaging: `telecard.__version__`, `python -m telecard`, and what the sdist carries.

.ci/dist.sh builds the real distributions and runs them; these are the fast checks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

import telecard
from tests.conftest import ROOT, subprocess_env

PACKAGE = Path(telecard.__file__).resolve().parent


def _installed(module_file: str) -> bool:
    """Whether a module file lies in this interpreter's site-packages."""
    where = {Path(sysconfig.get_path(key)).resolve() for key in ("purelib", "platlib")}
    return any(parent in where for parent in Path(module_file).resolve().parents)


def test_version_of_the_telecard_under_test() -> None:
    if _installed(telecard.__file__):
        assert telecard.__version__ == metadata.version("telecard")
    else:
        assert telecard.__version__ == "0+unknown"


def _copy_package(site: Path) -> None:
    shutil.copytree(PACKAGE, site / "telecard", ignore=shutil.ignore_patterns("__pycache__"))


def _dist_info(site: Path, version: str) -> None:
    """Metadata as a wheel install writes it, its RECORD listing the package's __init__.py."""
    info = site / f"telecard-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: telecard\nVersion: {version}\n")
    (info / "RECORD").write_text(f"telecard/__init__.py,,\n{info.name}/RECORD,,\n")


def _egg_info(tree: Path, version: str) -> None:
    """Metadata as a build leaves it in a source tree, listing that tree's files."""
    info = tree / "telecard.egg-info"
    info.mkdir()
    (info / "PKG-INFO").write_text(f"Metadata-Version: 2.1\nName: telecard\nVersion: {version}\n")
    (info / "SOURCES.txt").write_text("telecard/__init__.py\n")


def _version_in(cwd: Path, *path: Path) -> str:
    """telecard.__version__ in a fresh interpreter with `path` first on sys.path."""
    code = "import telecard; print(telecard.__version__, telecard.__file__)"
    env = subprocess_env()
    env["PYTHONPATH"] = os.pathsep.join([*map(str, path), env["PYTHONPATH"]])
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert Path(out[1]).resolve() == (path[0] / "telecard" / "__init__.py").resolve()
    return out[0]


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A site directory with telecard 9.8.7 installed in it."""
    site = tmp_path / "site"
    site.mkdir()
    _copy_package(site)
    _dist_info(site, "9.8.7")
    return site


def test_version_installed(site: Path, tmp_path: Path) -> None:
    assert _version_in(tmp_path, site) == "9.8.7"


def test_version_installed_run_from_a_checkout(site: Path, tmp_path: Path) -> None:
    # CI's case: the checkout it installed from is the working directory, and the egg-info the
    # build left there is the first telecard metadata on sys.path.
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    _egg_info(checkout, "1.0.0")
    assert _version_in(checkout, site) == "9.8.7"


def test_version_source_tree(site: Path, tmp_path: Path) -> None:
    # A source tree ahead of an installed copy runs code that copy's version does not describe.
    tree = tmp_path / "tree"
    tree.mkdir()
    _copy_package(tree)
    _egg_info(tree, "1.0.0")
    assert _version_in(tmp_path, tree, site) == "0+unknown"


def test_python_m_telecard() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "telecard", "--help"],
        env=subprocess_env(), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: telecard ")


def test_sdist_manifest(monkeypatch: pytest.MonkeyPatch) -> None:
    """MANIFEST.in selects what an unpacked sdist needs to run its tests and be read."""
    egg_info = pytest.importorskip(
        "setuptools.command.egg_info", reason="setuptools, which reads MANIFEST.in, is absent"
    )
    monkeypatch.chdir(ROOT)  # FileList globs relative to the working directory
    files = egg_info.FileList()
    for line in (ROOT / "MANIFEST.in").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            files.process_template_line(line)
    needed = {"LICENSE", "CHANGELOG.md", "README.md", "docs/datasheet.md"}
    for pattern in ("tests/*.py", "tests/peers/*.c", "docs/*.md", "cdriver/*.[ch]", "cdriver/*.py"):
        needed |= {p.relative_to(ROOT).as_posix() for p in ROOT.glob(pattern)}
    assert needed - set(files.files) == set()


def test_packages() -> None:
    """The sdist's tests import firmware_sim and telecard from the installed wheel."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert {"telecard", "firmware_sim"} <= set(config["tool"]["setuptools"]["packages"])
    assert "LICENSE" in config["project"]["license-files"]
