"""Builds the optional C part of the SDK (wallaroo/_speedups.c).

Everything else is in pyproject.toml. The extension is optional: without a
C compiler or Python's headers the install still succeeds, and the SDK
runs on its pure-Python path (the same replies, slower).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "wallaroo._speedups",
            ["wallaroo/_speedups.c"],
            optional=True,
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"],
        )
    ]
)
