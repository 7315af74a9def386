"""environment.yml installs what pyproject.toml and the Makefile install."""

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def _pip_section() -> list[str]:
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    return next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)


def test_environment_yml_lists_pyprojects_dependencies_and_extras():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = {d for d in project["dependencies"] if not d.startswith("torch")}
    for extra in ("dev", "notebooks"):  # what `make install` installs: -e ".[dev,notebooks]"
        wanted |= set(project["optional-dependencies"][extra])
    listed = {d for d in _pip_section() if not d.startswith(("torch", "-e"))}
    assert listed == wanted, f"environment.yml differs from pyproject.toml: missing {sorted(wanted - listed)}, " \
                             f"extra {sorted(listed - wanted)}"
    assert "-e ." in _pip_section()


def test_environment_yml_pins_the_makefiles_torch():
    spec = re.search(r"^TORCH_SPEC \?= (\S+)$", (REPO / "Makefile").read_text(), re.M).group(1)
    assert spec in _pip_section()


def test_license_file_matches_pyproject():
    assert tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"] == "Apache-2.0"
    assert "Apache License" in (REPO / "LICENSE").read_text()[:200]
