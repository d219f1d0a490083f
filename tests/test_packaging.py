"""The project installs as one namespace, `medprobe`, and nothing else."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[1]


def _configured() -> tuple[dict[str, str], list[str]]:
    setuptools = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return setuptools["package-dir"], setuptools["packages"]


def test_every_package_folder_is_listed_for_the_wheel():
    """A sub-package missing from `packages` works in an editable install and vanishes from a
    wheel; derive the list from the folders and compare."""
    package_dir, packages = _configured()
    expected = set()
    for name, folder in package_dir.items():
        for init in (CHECKOUT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(CHECKOUT / folder)
            expected.add(".".join([name, *relative.parts]))
    assert set(packages) == expected


@pytest.mark.parametrize("name", ["cache", "probe", "extract"])
def test_no_generic_top_level_module_is_importable_outside_the_checkout(tmp_path, name):
    code = (
        f"import importlib.util, medprobe.{name}; print(importlib.util.find_spec({name!r}) is None)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "True"
