"""The package list, found rather than written out, so that no subpackage can be left out of the
wheel, and the compiled core (the Rust crate in ``core/``, built by setuptools-rust as
``adaptloop._core``).

Everything else is in pyproject.toml. Its ``[tool.setuptools.package-dir]`` maps the layers'
top-level folders (``schemas/``, ``learners/``, ``snapshots/``, ``streams/``) to
``adaptloop.<layer>``; setuptools' own ``packages.find`` does not follow such a mapping (it names
packages by their folder), so each mapped folder is searched here and its packages named under the
mapping.
"""

import tomllib
from pathlib import Path

from setuptools import find_packages, setup
from setuptools_rust import Binding, RustExtension

ROOT = Path(__file__).resolve().parent
PACKAGE_DIR: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"][
    "setuptools"
]["package-dir"]


def mapped_packages(package_dir: dict[str, str]) -> list[str]:
    """Every package under each mapped folder, named as it installs (``streams/x`` ->
    ``adaptloop.streams.x``)."""
    found = []
    for name, folder in package_dir.items():
        found.append(name)
        found += [f"{name}.{sub}" for sub in find_packages(where=str(ROOT / folder))]
    return sorted(found)


# Release builds (the crate's profile keeps them quick and incremental); `pip install -e .` builds
# in place, so an edit of core/src rebuilds with the same command.
CORE = RustExtension("adaptloop._core", path="core/Cargo.toml", binding=Binding.PyO3, debug=False)

setup(packages=mapped_packages(PACKAGE_DIR), rust_extensions=[CORE], zip_safe=False)
