"""Build hook: setuptools' cffi_modules key cannot be declared in pyproject.toml."""

from setuptools import setup

setup(cffi_modules=["cdriver/build_cdriver.py:ffibuilder"])
