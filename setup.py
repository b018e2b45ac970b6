"""Build fasttcp's compiled extensions.

Every ``.pyx`` under ``fasttcp/`` becomes an extension module of the same dotted name, so a
new hot-path module needs no edit here. The extensions are required: there is no pure-Python
fallback, because the stack is only useful fast.
"""
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

ROOT = Path(__file__).parent


def extensions() -> list:
    exts = []
    for pyx in sorted((ROOT / "fasttcp").rglob("*.pyx")):
        rel = pyx.relative_to(ROOT)
        name = ".".join(rel.with_suffix("").parts)
        exts.append(
            Extension(
                name,
                [str(rel)],
                include_dirs=[str(rel.parent)],
                extra_compile_args=["-O3", "-fno-strict-aliasing", "-Wno-unused-function"],
            )
        )
    return exts


setup(
    ext_modules=cythonize(
        extensions(),
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "embedsignature": True,
        },
        include_path=[str(ROOT)],
    ),
)
