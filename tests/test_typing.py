"""The type stubs of the compiled modules describe the runtime, and mypy uses them.

Stubtest compares every compiled module with its .pyi; mypy --strict accepts examples/
and the README's Python blocks, and rejects exactly the marked lines of
tests/typing/rejected.py (so the stubs cannot silently decay to Any). The commands are in
tests/typecheck.py, which .ci/run also runs on its own.
"""
import ast
import dataclasses
import re
from pathlib import Path

import pytest

import typecheck
from fasttcp.host.settings import Settings

pytest.importorskip("mypy", reason="mypy is in the test extra: pip install '.[test]'")

REJECTED = Path(__file__).resolve().parent / "typing" / "rejected.py"


@pytest.fixture(scope="module")
def mypy_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("mypy-cache"))


def test_every_compiled_module_has_a_stub():
    pkg = typecheck.package_dir()
    missing = [m for m in typecheck.compiled_modules()
               if not (pkg.parent / (m.replace(".", "/") + ".pyi")).exists()]
    assert not missing, f"compiled modules without a .pyi stub: {missing}"


def test_stubtest(tmp_path):
    result = typecheck.stubtest(str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_accepts_examples_and_readme(tmp_path, mypy_cache):
    result = typecheck.mypy_examples_and_readme(str(tmp_path), mypy_cache)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_rejects_wrong_types(tmp_path, mypy_cache):
    expected = {(i, m.group(1))
                for i, line in enumerate(REJECTED.read_text().splitlines(), 1)
                if (m := re.search(r"# E: ([\w-]+)$", line))}
    assert len(expected) >= 10
    result = typecheck.mypy([str(REJECTED)], str(tmp_path), mypy_cache)
    found = {(int(m.group(1)), m.group(2))
             for m in re.finditer(r"^.*rejected\.py:(\d+): error: .*\[([\w-]+)\]$",
                                  result.stdout, re.M)}
    assert found == expected, result.stdout + result.stderr


def test_host_settings_keywords_match_settings():
    """host.pyi types Host(**settings) with a TypedDict of Settings' fields: a setting
    added to settings.py must be added there too (with the field's type)."""
    stub = ast.parse((typecheck.package_dir() / "host" / "host.pyi").read_text())
    cls = next(n for n in stub.body if isinstance(n, ast.ClassDef) and n.name == "_SettingsKwargs")
    keys = [n.target.id for n in cls.body
            if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)]
    assert keys == [f.name for f in dataclasses.fields(Settings) if f.init], (
        "fasttcp/host/host.pyi: _SettingsKwargs must list Settings' fields, in order")
