"""The package under test is the compiled one, not the source tree."""
import importlib

import pytest

COMPILED_MODULES = [
    "fasttcp.wire._wire",
    "fasttcp.storage._ring",
    "fasttcp.storage._reasm",
    "fasttcp.tcp._isn",
    "fasttcp.tcp._fastpath",
    "fasttcp.tcp._cookies",
    "fasttcp.tcp.host_services",
    "fasttcp.tcp.tcb",
    "fasttcp.tcp.transitions",
    "fasttcp.link._tunio",
    "fasttcp.host._frag",
    "fasttcp.tcp.connection",
    "fasttcp.host.host",
    "fasttcp.tcp.rtt",
]


@pytest.mark.parametrize("name", COMPILED_MODULES)
def test_hot_path_modules_are_compiled_extensions(name):
    module = importlib.import_module(name)
    assert module.__file__.endswith(".so"), (
        f"{name} was imported from {module.__file__}, not a compiled extension: "
        "install with `pip install .` (or build in place) before running the tests"
    )
    assert module.COMPILED is True


def test_typed_package_marker_is_installed():
    import fasttcp
    from pathlib import Path

    assert (Path(fasttcp.__file__).parent / "py.typed").exists()
