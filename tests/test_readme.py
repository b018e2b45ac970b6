"""The README's Python examples run as printed and print what their comments say."""
import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks():
    if not README.exists():                       # an installed-package-only test run
        return []
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


@pytest.mark.parametrize("code", _blocks())
def test_readme_example_runs(code):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    # every "print(...)  # expected" comment in the block appears in the output
    for expected in re.findall(r"print\(.*\)\s+#\s*(.+)", code):
        assert expected.strip() in out.getvalue(), (expected, out.getvalue())


def test_readme_has_examples():
    assert len(_blocks()) >= 2
