"""Markers for privileged tests that get them from a fixture rather than a decorator."""
from netns_util import NAMESPACE_FIXTURES

import pytest


def pytest_collection_modifyitems(items) -> None:
    # A test that makes a namespace through a fixture (see netns_util.NAMESPACE_FIXTURES)
    # needs root as much as one decorated with @requires_netns.
    for item in items:
        if NAMESPACE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.root)
            item.add_marker(pytest.mark.netns)
