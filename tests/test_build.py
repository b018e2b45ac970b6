"""The package under test is the compiled one, not the source tree."""
import importlib
from pathlib import Path

import pytest

import fasttcp

PACKAGE = Path(fasttcp.__file__).parent

# As setup.py does: every .pyx in the package is an extension module of the same dotted
# name (the .pyx sources are installed as package data, so this works installed too).
COMPILED_MODULES = sorted(
    ".".join(("fasttcp",) + pyx.relative_to(PACKAGE).with_suffix("").parts)
    for pyx in PACKAGE.rglob("*.pyx")
)


def test_the_extension_sources_are_found():
    # Guards the list above: without the .pyx files it would be empty and test nothing.
    assert {"fasttcp.wire._wire", "fasttcp.storage._ring", "fasttcp.host._frag"} <= set(
        COMPILED_MODULES)


@pytest.mark.parametrize("name", COMPILED_MODULES)
def test_hot_path_modules_are_compiled_extensions(name):
    module = importlib.import_module(name)
    assert module.__file__.endswith(".so"), (
        f"{name} was imported from {module.__file__}, not a compiled extension: "
        "install with `pip install .` (or build in place) before running the tests"
    )
    assert module.COMPILED is True


def test_typed_package_marker_is_installed():
    assert (PACKAGE / "py.typed").exists()
