"""requirements.lock, what `make install` installs: exact versions for every dependency pyproject.toml names."""
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT


def locked():
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"not an exact version: {line!r}"
            pins[canonicalize_name(name)] = version
    return pins


def test_the_lock_pins_every_dependency_within_its_range():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = locked()
    for text in project["dependencies"] + project["optional-dependencies"]["dev"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in requirements.lock: run make lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (text, pins[name])


def test_make_installs_from_the_lock():
    makefile = (ROOT / "Makefile").read_text()
    assert "$(VENV)/.installed: requirements.lock" in makefile
    assert "pip install --quiet -r requirements.lock" in makefile


def test_make_install_registers_sluices_entry_points():
    """make install installs the checkout in place, so Celery finds `-S sluice` and the `sluice`
    result backend through the entry points pyproject.toml declares, outside Django too."""
    from importlib.metadata import entry_points

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    for group, points in declared.items():
        found = {point.name: point.value for point in entry_points(group=group)}
        for name, target in points.items():
            assert found.get(name) == target, f"{group} {name}: not registered (make install)"
