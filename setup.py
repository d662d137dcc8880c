"""Build hook: setuptools' cffi_modules key cannot be declared in pyproject.toml.

cffi builds the extension against the stable ABI (_cdriver.abi3.so); py_limited_api tags the
wheel to match, so one wheel serves CPython 3.11 and every later release.
"""

from setuptools import setup

setup(
    cffi_modules=["cdriver/build_cdriver.py:ffibuilder"],
    options={"bdist_wheel": {"py_limited_api": "cp311"}},
)
