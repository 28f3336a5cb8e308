"""The supported dependency ranges (nn_prune_ext/dependencies.py): declared once, checked at import, tested at the floor."""

import os
import subprocess
import sys
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from nn_prune_ext import dependencies
from nn_prune_ext.dependencies import REQUIREMENTS, check_installed, floor, floor_constraints, install_requires

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fake_versions(monkeypatch, **versions: str) -> None:
    """Make `importlib.metadata.version` report `versions` (keys with `_` for `-`), the real ones otherwise."""
    real = metadata.version
    wanted = {name.replace("_", "-"): version for name, version in versions.items()}
    monkeypatch.setattr(metadata, "version", lambda name: wanted[name] if name in wanted else real(name))


def test_the_installed_package_declares_the_table():
    """setup.py reads its install_requires from dependencies.py (the installed metadata says what pip saw)."""
    declared = {
        Requirement(line).name: str(Requirement(line).specifier)
        for line in metadata.requires("nn_prune_ext")
        if "extra ==" not in line
    }
    expected = {Requirement(line).name: str(Requirement(line).specifier) for line in install_requires()}
    assert declared == expected


def test_every_requirement_has_a_floor_and_a_pin():
    assert floor(">=5.14,<6") == "5.14" and floor(">= 2.13") == "2.13"
    constraints = floor_constraints()
    assert len(constraints) == len(REQUIREMENTS)
    assert {"torch==2.13", "transformers==5.14", "numpy==2.0", "scipy==1.13"} <= set(constraints)
    assert not any("<" in specifier for name, specifier in REQUIREMENTS.items() if name != "transformers")
    with pytest.raises(ValueError, match="no '>=' floor"):
        floor("<6")


def test_the_command_line_prints_the_floor_constraints():
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "nn_prune_ext", "dependencies.py"), "floor-constraints"],
        capture_output=True, text=True, check=True,
    )
    assert done.stdout.split() == floor_constraints()


@pytest.mark.parametrize(
    "versions",
    [
        dict(transformers="5.26.0.dev0"),
        dict(torch="2.13.0+cpu"),
        dict(torch="3.1.0"),
        dict(transformers="5.99.1"),
        dict(scipy="1.0.0", tqdm="4.0.0"),  # pip enforces these ranges; the import checks torch and transformers
    ],
)
def test_supported_releases_pass(monkeypatch, versions):
    fake_versions(monkeypatch, **versions)
    check_installed()


@pytest.mark.parametrize(
    "versions, message",
    [
        (dict(transformers="4.57.1"), "transformers 4.57.1 is installed, nn_prune_ext supports transformers>=5.14,<6"),
        (dict(transformers="6.0.0"), "transformers 6.0.0 is installed"),
        (dict(transformers="6.0.0.dev0"), "transformers 6.0.0.dev0 is installed"),
        (dict(transformers="5.14.0.dev0"), "transformers 5.14.0.dev0 is installed"),
        (dict(torch="2.12.1+cpu"), "torch 2.12.1+cpu is installed, nn_prune_ext supports torch>=2.13"),
    ],
)
def test_unsupported_releases_are_refused_with_the_range(monkeypatch, versions, message):
    fake_versions(monkeypatch, **versions)
    with pytest.raises(ImportError, match="cannot run with these releases") as error:
        check_installed()
    assert message in str(error.value)
    name = next(iter(versions))
    assert f"pip install '{name}{REQUIREMENTS[name]}'" in str(error.value)
    monkeypatch.setenv(dependencies.SKIP_CHECK_VARIABLE, "1")
    check_installed()


def test_an_unsupported_transformers_is_refused_at_import_before_torch_loads():
    script = (
        "import sys\n"
        "from importlib import metadata\n"
        "real = metadata.version\n"
        "metadata.version = lambda name: '4.57.1' if name == 'transformers' else real(name)\n"
        "try:\n"
        "    import nn_prune_ext\n"
        "except ImportError as error:\n"
        "    print('REFUSED', error)\n"
        "print('TORCH LOADED' if 'torch' in sys.modules else 'TORCH NOT LOADED')\n"
    )
    environment = {key: value for key, value in os.environ.items() if key != dependencies.SKIP_CHECK_VARIABLE}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment, cwd=ROOT)
    assert "REFUSED nn_prune_ext cannot run with these releases: transformers 4.57.1 is installed" in done.stdout
    assert "TORCH NOT LOADED" in done.stdout, done.stdout + done.stderr


@pytest.mark.skipif(os.environ.get("NN_PRUNE_EXT_TEST_ENVIRONMENT") != "floor", reason="runs in the floor environment")
def test_the_floor_environment_runs_every_floor():
    """`make test-floor` really installed the lowest release of every dependency (not a newer one)."""
    for name, specifier in REQUIREMENTS.items():
        installed = Version(metadata.version(name))
        assert Version(installed.public) == Version(floor(specifier)), f"{name}: {installed} is not the floor {floor(specifier)}"
