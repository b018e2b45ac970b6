"""The public names of the packages import from where they are documented."""
import ast
from pathlib import Path

import fasttcp.tcp
from fasttcp.tcp import congestion, cubic, errors, states

TCP_NAMES = {
    # The congestion-control extension point and its implementations.
    "CongestionControl": congestion, "NewReno": congestion, "Cubic": cubic,
    "ALGORITHMS": congestion, "INFINITE_SSTHRESH": congestion, "resolve": congestion,
    "rfc6928_initial_window": congestion,
    # What a connection reports.
    "TcpError": errors, "ConnectionRefused": errors, "ConnectionReset": errors,
    "ConnectionTimedOut": errors, "ConnectionAborted": errors, "ConnectionClosed": errors,
    "State": states,
}


def test_fasttcp_tcp_exports_the_policy_names():
    assert sorted(fasttcp.tcp.__all__) == sorted(TCP_NAMES)
    for name, module in TCP_NAMES.items():
        assert getattr(fasttcp.tcp, name) is getattr(module, name), name


def test_star_import_of_fasttcp_tcp():
    namespace: dict = {}
    exec("from fasttcp.tcp import *", namespace)
    assert set(TCP_NAMES) <= set(namespace)
    assert issubclass(namespace["Cubic"], namespace["CongestionControl"])
    assert namespace["ALGORITHMS"]["cubic"] is namespace["Cubic"]
    assert namespace["resolve"]("newreno") is namespace["NewReno"]


def test_fasttcp_tcp_package_imports_nothing_from_host():
    # fasttcp.host imports fasttcp.tcp; the other way round would be a cycle.
    tree = ast.parse(Path(fasttcp.tcp.__file__).read_text())
    imported = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [a.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for a in node.names]
    assert imported and not [m for m in imported if m.startswith("fasttcp.host")]


def test_top_level_names_are_the_same_objects():
    for name in ("State", "TcpError", "ConnectionRefused", "ConnectionReset",
                 "ConnectionTimedOut", "ConnectionAborted", "ConnectionClosed"):
        assert getattr(fasttcp, name) is getattr(fasttcp.tcp, name)
