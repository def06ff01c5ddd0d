"""environment.yml (conda users) and pyproject.toml (pip, the tested path) agree."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_installs_the_project_with_the_same_extras():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    python = next(d for d in conda if d.startswith("python"))
    minimum = re.search(r">=\s*([\d.]+)", project["requires-python"]).group(1)
    assert python.replace("python", "").lstrip("=>") >= minimum
    assert "pip" in conda
    installs = [line for line in pip_section if line.startswith("-e")]
    assert installs, "environment.yml must install this project through pip"
    extras = re.search(r"\[(.*)\]", installs[0]).group(1).split(",")
    assert set(extras) <= set(project["optional-dependencies"])
    makefile = (ROOT / "Makefile").read_text()
    assert f'-e ".[{",".join(extras)}]"' in makefile, "Makefile and environment.yml differ"
    # only the project (and pip options) in the pip section: one dependency list
    assert all(line.startswith("-") for line in pip_section)
    assert any(dep.startswith("torch==") for dep in project["dependencies"])
