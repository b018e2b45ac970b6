"""Type checks of fasttcp's public API: stubtest and mypy --strict.

- ``stubtest``: every compiled module (each ``.pyx`` of the importable fasttcp) against its
  ``.pyi`` stub, with ``.ci/stubtest-allowlist.txt``.
- ``mypy --strict`` on ``examples/`` and the README's ``python`` blocks.

Both run in a scratch directory against whatever ``fasttcp`` the interpreter imports: the
installed package in CI (its packaged stubs), the worktree's build with
``PYTHONPATH=$PWD``. Run as a script (``.ci/run`` does) or through tests/test_typing.py;
``--print-enums`` prints the compiled enums' members as stub lines.
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALLOWLIST = ROOT / ".ci" / "stubtest-allowlist.txt"
EXAMPLES = ROOT / "examples"
README = ROOT / "README.md"


def package_dir() -> Path:
    spec = importlib.util.find_spec("fasttcp")
    assert spec is not None and spec.origin is not None, "fasttcp is not importable"
    return Path(spec.origin).parent


def compiled_modules() -> list[str]:
    """The dotted names of fasttcp's compiled modules: one per .pyx (setup.py's rule)."""
    pkg = package_dir()
    return sorted(".".join(("fasttcp",) + p.relative_to(pkg).with_suffix("").parts)
                  for p in pkg.rglob("*.pyx"))


def readme_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def _run(args: list[str], cwd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True,
                          text=True, env=dict(os.environ))


def stubtest(cwd: str) -> subprocess.CompletedProcess[str]:
    args = ["mypy.stubtest", "--allowlist", str(ALLOWLIST)]
    if sys.version_info >= (3, 12):
        # The allowlist's SplitPacket.__buffer__ entries are for Pythons without PEP 688's
        # __buffer__; from 3.12 the runtime has it and those entries go unused.
        args.append("--ignore-unused-allowlist")
    return _run(args + compiled_modules(), cwd)


def mypy(paths: list[str], cwd: str, cache_dir: str) -> subprocess.CompletedProcess[str]:
    return _run(["mypy", "--strict", "--show-error-codes", "--no-error-summary",
                 "--no-pretty", "--cache-dir", cache_dir, *paths], cwd)


def mypy_examples_and_readme(work: str, cache_dir: str) -> subprocess.CompletedProcess[str]:
    """mypy --strict on examples/ and on each README python block (as its own file)."""
    paths = [str(p) for p in sorted(EXAMPLES.glob("*.py"))]
    for i, code in enumerate(readme_blocks()):
        block = Path(work) / f"readme_block_{i}.py"
        block.write_text(code)
        paths.append(str(block))
    return mypy(paths, work, cache_dir)


def print_enums() -> None:
    """The members of the compiled modules' enums as stub lines, to paste into the .pyi
    when a .pxd gains a counter, event or state (stubtest reports the difference)."""
    import importlib
    for module, name in (("fasttcp.tcp.host_services", "Count"),
                         ("fasttcp.tcp.transitions", "TcpEvent"), ("fasttcp.tcp.tcb", "TcpState")):
        print(f"# {module.replace('.', '/')}.pyi, class {name}:")
        for member in getattr(importlib.import_module(module), name):
            print(f"    {member.name} = {member.value}")


def main() -> int:
    if sys.argv[1:] == ["--print-enums"]:
        print_enums()
        return 0
    failed = 0
    with tempfile.TemporaryDirectory() as work:
        for name, result in (("stubtest", stubtest(work)),
                             ("mypy --strict examples/ README.md",
                              mypy_examples_and_readme(work, os.path.join(work, ".cache")))):
            print(f"{name}: {'ok' if result.returncode == 0 else 'FAILED'}")
            if result.returncode:
                failed += 1
                print(result.stdout + result.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
