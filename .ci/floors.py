"""Print the lowest versions pyproject.toml's dependencies admit, as pins (``name==floor``), one per line.

CI installs exactly these (torch aside: it stays at the machine's 2.13.0) and runs the fast tests, so a floor
that does not work fails the build instead of a user's install.
"""
import re
import sys
import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]
extra = sys.argv[1:]   # optional-dependency groups to add, e.g. "test"
for requirement in project["dependencies"] + [r for group in extra for r in project["optional-dependencies"][group]]:
    name, floor = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*>=\s*([^,;\s]+)", requirement).groups()
    if name != "torch":
        print(f"{name}=={floor}")
