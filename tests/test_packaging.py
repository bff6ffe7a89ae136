"""What an install reads: the declared floors (the same in pyproject.toml and requirements.txt) and the
pins CI installs for the floors run."""
from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.floors
ROOT = Path(__file__).resolve().parent.parent


def test_requirements_txt_declares_the_same_floors_as_pyproject_without_torch():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[><=]", r)[0].strip(): r.replace(" ", "") for r in project["dependencies"]}
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    listed = {re.split(r"[><=]", line)[0]: line for line in lines if line}
    assert "torch" not in listed                     # ComfyUI's own torch is never touched
    assert listed == {name: r for name, r in declared.items() if name != "torch"}


def test_the_floors_ci_installs_are_the_declared_lower_bounds():
    out = subprocess.run([sys.executable, str(ROOT / ".ci" / "floors.py"), "test"], capture_output=True, text=True,
                         check=True).stdout.split()
    assert "transformers==5.24" in out and not any(p.startswith("torch==") for p in out)
    assert all("==" in p for p in out) and "pytest==8" in out


def test_every_data_file_of_the_engine_is_in_the_package_data():
    """An installed (non-editable) pack has only the data files package-data names: a file the engine reads that
    no pattern covers works from a checkout and fails after `pip install`."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["acdc_core"]
    package = ROOT / "acdc_core"
    data = [p for p in package.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")
            and "__pycache__" not in p.parts]
    assert data
    missing = [p.relative_to(package).as_posix() for p in data
               if not any(p in set(package.glob(pattern)) for pattern in patterns)]
    assert not missing, f"package-data misses {missing[:5]}"
