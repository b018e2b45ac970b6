"""Each file of examples/ runs as a program and prints what it should; the README's
examples are the same code as examples/asyncio_echo.py and examples/sans_io.py."""
import os
import subprocess
import sys

import pytest

import typecheck

EXAMPLES = typecheck.EXAMPLES
EXPECTED = {
    "asyncio_echo.py": "b'hello, user-space TCP'",
    "sans_io.py": "b'hello' ESTABLISHED",
    "two_host_transfer.py": "received 4194304 bytes",
}
pytestmark = pytest.mark.skipif(not EXAMPLES.is_dir(), reason="no examples/ (installed package)")


def test_every_example_is_tested():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name, tmp_path):
    # The fasttcp the tests import (the build in the worktree, or the installed package).
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(typecheck.package_dir().parent)] + env.get("PYTHONPATH", "").split(os.pathsep))
    result = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True,
                            text=True, env=env, timeout=120, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert EXPECTED[name] in result.stdout, result.stdout


@pytest.mark.parametrize("name, block", [("asyncio_echo.py", 0), ("sans_io.py", 1)])
def test_readme_example_is_the_file(name, block):
    code = typecheck.readme_blocks()[block]
    assert code in (EXAMPLES / name).read_text(), f"README block {block} and {name} differ"
