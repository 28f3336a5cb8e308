"""The releases of each dependency that nn_prune_ext supports, in one table.

`setup.py` reads `REQUIREMENTS` from this file (it runs it without importing the package), the
package checks the installed torch and transformers against it at import (pip enforces the rest
when it installs), and the floor test environment
(`make test-floor`) pins every dependency to the lowest release it admits
(`python nn_prune_ext/dependencies.py floor-constraints`). Each floor is a release the test suite
passes on; `make test` runs the suite on the newest releases pip resolves.

Why each floor:

- torch 2.13: the oldest release the suite runs on here (the CPU wheel on disk); older ones may
  well work but are not tested.
- transformers 5.14: heterogeneous configs (`per_layer_config`), which slim checkpoints are
  described with, arrived in 5.14. `<6`: a major release removes APIs (v5 removed `head_mask` and
  `prune_heads`); a new major is admitted once the suite passes on it.
- accelerate 1.3: transformers' `Trainer` calls `Accelerator.unwrap_model(keep_torch_compile=...)`.
- numpy 2.0: the pyarrow that `datasets` pulls in refuses numpy 1.x at import.
- scipy 1.13: the first release built for numpy 2.
- safetensors 0.8 and huggingface-hub 1.5: what transformers 5.14 itself requires.
- the others: the oldest releases that install and pass beside those (packaging 22 for the test
  tools, tqdm 4.66.3 for datasets 3.0).

Python: 3.11 and later (`setup.py`), the interpreter the suite runs on here.

This file must run on the standard library alone: `setup.py` executes it before anything is installed.
"""

from __future__ import annotations

import os
import re
import sys

__all__ = [
    "REQUIREMENTS",
    "CHECKED_AT_IMPORT",
    "install_requires",
    "floor",
    "floor_constraints",
    "check_installed",
    "SKIP_CHECK_VARIABLE",
]

# Distribution name -> version specifier. The first `>=` bound of each is its floor.
REQUIREMENTS: dict[str, str] = {
    "torch": ">=2.13",
    "transformers": ">=5.14,<6",
    "accelerate": ">=1.3",
    "datasets": ">=3.0",
    "evaluate": ">=0.4",
    "huggingface-hub": ">=1.5",
    "numpy": ">=2.0",
    "packaging": ">=22.0",
    "safetensors": ">=0.8",
    "scipy": ">=1.13",
    "tqdm": ">=4.66.3",
}

# The dependencies whose internals nn_prune_ext relies on: a release outside the range fails deep
# inside a forward rather than at import, so the import checks them.
CHECKED_AT_IMPORT = ("torch", "transformers")

# Set to 1 to import nn_prune_ext with releases outside REQUIREMENTS (e.g. to try a new major).
SKIP_CHECK_VARIABLE = "NN_PRUNE_EXT_SKIP_VERSION_CHECK"


def install_requires() -> list[str]:
    """`REQUIREMENTS` as `setup.py`'s `install_requires` (`["torch>=2.13", ...]`)."""
    return [f"{name}{specifier}" for name, specifier in REQUIREMENTS.items()]


def floor(specifier: str) -> str:
    """The lowest release a specifier admits: its `>=` bound (`">=5.14,<6"` -> `"5.14"`)."""
    match = re.search(r">=\s*([^,\s]+)", specifier)
    if match is None:
        raise ValueError(f"{specifier!r} has no '>=' floor; every requirement of nn_prune_ext needs one.")
    return match.group(1)


def floor_constraints() -> list[str]:
    """pip constraints pinning every dependency to its floor (`["torch==2.13", ...]`)."""
    return [f"{name}=={floor(specifier)}" for name, specifier in REQUIREMENTS.items()]


def check_installed() -> None:
    """Refuse to run with a torch or transformers outside `REQUIREMENTS`, saying which and what to install.

    Raises:
        ImportError: If the installed release of one of `CHECKED_AT_IMPORT` is outside its range,
            unless the environment variable `NN_PRUNE_EXT_SKIP_VERSION_CHECK` is set to 1. A
            dependency that is not installed, or whose release cannot be read, is left to fail at
            its own import.
    """
    if os.environ.get(SKIP_CHECK_VARIABLE) == "1":
        return
    from importlib import metadata

    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion

    problems = []
    for name in CHECKED_AT_IMPORT:
        specifier = REQUIREMENTS[name]
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        try:
            # A pre-release of a release in range (a transformers built from main) is accepted; one of
            # the floor release itself comes before the floor and is not.
            supported = SpecifierSet(specifier).contains(installed, prereleases=True)
        except InvalidVersion:
            continue
        if not supported:
            problems.append((name, installed, specifier))
    if problems:
        found = "; ".join(f"{name} {installed} is installed, nn_prune_ext supports {name}{spec}" for name, installed, spec in problems)
        fix = " ".join(f"'{name}{spec}'" for name, _, spec in problems)
        raise ImportError(
            f"nn_prune_ext cannot run with these releases: {found}. Install supported ones with "
            f"`pip install {fix}`, or set {SKIP_CHECK_VARIABLE}=1 to try anyway (untested; wrong results are "
            "possible)."
        )


if __name__ == "__main__":
    # `python nn_prune_ext/dependencies.py floor-constraints` prints the floor environment's constraints.
    if sys.argv[1:] != ["floor-constraints"]:
        sys.exit("usage: python nn_prune_ext/dependencies.py floor-constraints")
    print("\n".join(floor_constraints()))
