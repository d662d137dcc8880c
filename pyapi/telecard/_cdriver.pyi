# The cffi extension built from cdriver/ (API mode); its ffi and lib are untyped.
from typing import Any

ffi: Any
lib: Any
